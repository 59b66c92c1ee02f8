"""Image decoding shared by the dashboard, the data pipeline and prediction.

`read_image_checked` is the edge for every image file the app did not write itself (uploads,
folders, CLI paths, catalogue photos): every way such a file can be bad becomes an
`ImageRejected` whose message names the file and the problem; given the folders a person may use
(core.access.roles: team mode), a file that lies outside them once its links are followed (a
catalogue photo that is a symbolic link out of them) is one such way (`resolve_within`). `open_rgb`
is for the app's own files (the resized-photo cache).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# White, like the studio background of catalogue photos: transparent pixels become this.
BACKGROUND = (255, 255, 255)
# Formats a user may bring, by Pillow's name -> the file extensions they come with.
ACCEPTED_FORMATS = {"JPEG": ("jpg", "jpeg"), "PNG": ("png",), "WEBP": ("webp",), "AVIF": ("avif",)}
ACCEPTED_EXTENSIONS = tuple(ext for exts in ACCEPTED_FORMATS.values() for ext in exts)
# Decompression-bomb guard, checked from the header before decoding: at most MAX_PIXELS decoded
# (80 MP is ~240 MB of RGB). A baseline JPEG decoded reduced (draft, `max_side`) streams through
# the decoder, so its header may say up to MAX_REDUCED_PIXELS; a progressive one holds every DCT
# coefficient of the full image whatever the scale (a 144 MP one: 0.45-0.9 GB), so it may not.
# Both are below Pillow's own error threshold (~179 MP), so every refusal says the same thing.
MAX_PIXELS = 80_000_000
MAX_REDUCED_PIXELS = 160_000_000
# What a decode may cost is bounded too, from the header: pixels x bands x bytes per sample, at most
# MAX_DECODE_BYTES (what an 80 MP 8-bit RGB photo holds); and images of more than 8 bits per sample
# (16-bit PNGs) at most MAX_HIGH_DEPTH_PIXELS: their samples are converted to 8 bits after decoding, a
# second pass over the whole image, and a catalogue photo is never such a master. A 154 KB 16-bit
# greyscale PNG of 8900 x 8900 (79 MP, under MAX_PIXELS) took 10 s of CPU and 1.5 GB to decode.
MAX_DECODE_BYTES = 240_000_000
MAX_HIGH_DEPTH_PIXELS = 20_000_000
# 16-bit grey level -> 8-bit, rounded: a look-up per pixel costs 1 byte, where arithmetic took 8-byte temporaries.
_GREY_16_TO_8 = ((np.arange(65_536, dtype=np.uint32) * 255 + 32_767) // 65_535).astype(np.uint8)


class ImageRejected(ValueError):
    """A file a user brought is not an image we can read; the message names the file and why."""


def open_rgb(path: str | Path, max_side: int | None = None) -> Image.Image:
    """Decode an image file as RGB, transparent parts on white, EXIF rotation applied.

    With `max_side`, JPEGs are decoded with `draft()` (DCT scaling) straight to about that size,
    several times faster than a full decode of a 1800x2400 catalogue photo.
    """
    with Image.open(path) as image:
        if max_side is not None and image.format == "JPEG":
            image.draft("RGB", (max_side, max_side))
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode (L, P, CMYK, RGBA, LA, I;16 ...) as RGB; alpha is composited on white; 16-bit
    greyscale (I;16, or I as older Pillows read it) scaled to 8 bits."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode == "I" or image.mode.startswith("I;16"):  # convert() would clip every value over 255 to white
        levels = np.asarray(image)
        if image.mode == "I":  # 32-bit signed: what 16 bits hold, and nothing else
            levels = np.clip(levels, 0, 65_535)
        return Image.fromarray(_GREY_16_TO_8[levels]).convert("RGB")  # a table, not arithmetic on big temporaries
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def thumbnail_jpeg(path: str | Path, max_side: int = 192, quality: int = 85,
                   roots: Sequence[Path] | None = None) -> bytes:
    """A JPEG thumbnail whose longer side is at most `max_side`, as bytes (for caching and display);
    the file is read as `read_image_checked` reads it, under `roots` (ImageRejected names the file
    by its name)."""
    image = read_image_checked(path, name=Path(path).name, max_side=max_side, roots=roots)
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def read_image_checked(
    source: str | Path | bytes, name: str | None = None, max_side: int | None = None,
    roots: Sequence[Path] | None = None,
) -> Image.Image:
    """Decode a user's image (a path, or the bytes of an upload) as RGB, transparency on white,
    EXIF rotation applied; raise ImageRejected naming `name` (default: the path) and the problem:
    a path outside `roots` once its links are followed (`resolve_within`; any path without them), an
    empty file, not an image, a format other than ACCEPTED_FORMATS, too many pixels or too costly
    a decode (checked from the header, before decoding: see MAX_PIXELS and MAX_DECODE_BYTES), or a
    truncated or corrupt file.

    With `max_side`, a JPEG is decoded with `draft()` straight to about that size or a little
    more (as `open_rgb`), and a baseline JPEG's header may then say up to MAX_REDUCED_PIXELS;
    other formats are unaffected.
    """
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"max_side must be a positive int or None, got {max_side!r}")
    label = name if name is not None else str(source) if not isinstance(source, bytes) else "upload"
    try:
        data = source if isinstance(source, bytes) else resolve_within(Path(source), roots, label).read_bytes()
    except OSError as err:
        raise ImageRejected(f"{label}: cannot read the file ({err.strerror or err})") from err
    if not data:
        raise ImageRejected(f"{label}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limits are checked below
            image = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS) + _READABLE_ONLY)
    except UnidentifiedImageError as err:
        raise ImageRejected(f"{label}: not an image, or a format that cannot be read "
                            f"(accepted: {', '.join(ACCEPTED_FORMATS)})") from err
    except Image.DecompressionBombError as err:
        pixels = re.search(r"\((\d+) pixels\)", str(err))  # Pillow's message: "Image size (N pixels) exceeds ..."
        size = f"{int(pixels[1]):,} pixels" if pixels else "its size"
        reduced = max_side is not None and data[:2] == b"\xff\xd8"  # a JPEG, to be decoded reduced
        raise ImageRejected(_too_large(label, size, MAX_REDUCED_PIXELS if reduced else MAX_PIXELS)) from err
    except (OSError, SyntaxError, ValueError) as err:  # a header cut short or broken
        raise ImageRejected(f"{label}: the image data is truncated or corrupt ({err})") from err
    with image:
        if image.format not in ACCEPTED_FORMATS:
            raise ImageRejected(f"{label}: a {image.format} image; accepted formats are {', '.join(ACCEPTED_FORMATS)}")
        reduced = max_side is not None and image.format == "JPEG"
        limit = MAX_REDUCED_PIXELS if reduced and not image.info.get("progressive") else MAX_PIXELS
        if image.width * image.height > limit:
            kind = "a progressive JPEG of " if reduced and limit == MAX_PIXELS else ""
            raise ImageRejected(_too_large(label, f"{kind}{image.width}x{image.height} pixels", limit))
        try:
            if reduced:
                image.draft("RGB", (max_side, max_side))
                if image.width * image.height > MAX_PIXELS:  # a max_side too large to reduce it enough
                    raise ImageRejected(_too_large(label, f"{image.width}x{image.height} pixels decoded", MAX_PIXELS))
            _check_decode_cost(label, image)
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
        except ImageRejected:
            raise
        except (OSError, SyntaxError, ValueError) as err:  # truncated data, broken chunks
            raise ImageRejected(f"{label}: the image data is truncated or corrupt ({err})") from err


def resolve_within(path: Path, roots: Sequence[Path] | None, label: str) -> Path:
    """`path` with its links followed, when it lies under one of `roots` (resolved folders: the ones a
    person may use, core.access.roles.Actor.roots); `path` as it is when `roots` is None (the command
    line, one person's own machine). ImageRejected naming `label` otherwise: a photo inside an allowed
    dataset that links out of the allowed folders is not read, as the folder it links to would not be."""
    if roots is None:
        return path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as err:  # a symbolic link loop (RuntimeError before Python 3.13)
        raise ImageRejected(f"{label}: cannot read the file ({err})") from err
    if not any(resolved.is_relative_to(root) for root in roots):
        raise ImageRejected(f"{label}: lies outside the folders this dashboard may use once its links are followed: "
                            "not read")
    return resolved


def _too_large(label: str, size: str, limit: int, what: str = "megapixel limit") -> str:
    return (f"{label}: {size}, more than the {limit // 1_000_000} {what} "
            "(refused as a possible decompression bomb)")


def bits_per_sample(image: Image.Image) -> int:
    """The bits of each sample the decoder will produce, from an opened (not yet decoded) image's header:
    32 for modes I and F, 16 for 16-bit files (mode I;16, or a raw mode such as PNG's "RGB;16B"), else 8."""
    if image.mode in ("I", "F"):
        return 32
    raw_modes = [tile.args if isinstance(tile.args, str) else tile.args[0] for tile in image.tile
                 if tile.args and isinstance(tile.args, str | tuple)]
    return 16 if image.mode.startswith("I;16") or any(";16" in str(raw) for raw in raw_modes) else 8


def _check_decode_cost(label: str, image: Image.Image) -> None:
    """ImageRejected when decoding `image` at its current size (after any draft) would cost more than
    MAX_DECODE_BYTES, or it has more than 8 bits per sample and more than MAX_HIGH_DEPTH_PIXELS."""
    pixels, bits = image.width * image.height, bits_per_sample(image)
    size = f"{image.width}x{image.height} pixels"
    if bits > 8 and pixels > MAX_HIGH_DEPTH_PIXELS:
        raise ImageRejected(_too_large(label, f"{size} of {bits} bits per sample", MAX_HIGH_DEPTH_PIXELS,
                                       "megapixel limit for images of more than 8 bits per sample"))
    cost = pixels * len(image.getbands()) * max(bits, 8) // 8
    if cost > MAX_DECODE_BYTES:
        raise ImageRejected(_too_large(label, f"{size} of {len(image.getbands())} x {max(bits, 8)} bits "
                                              f"({cost / 1e6:,.0f} MB decoded)", MAX_DECODE_BYTES, "MB decoding limit"))


# Identified only to say which format a refused file is, never decoded.
_READABLE_ONLY = ["GIF", "BMP", "TIFF", "ICO", "PPM"]


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given (whatever their extension: an unreadable one gets its own error), folders
    replaced by their files with an accepted image extension (any case), recursively, sorted; a
    path that does not exist is kept, so that it gets an error too."""
    expanded: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            expanded.extend(sorted(
                file for file in path.rglob("*")
                if file.suffix.lower().lstrip(".") in ACCEPTED_EXTENSIONS and file.is_file()))
        else:
            expanded.append(path)
    return expanded
