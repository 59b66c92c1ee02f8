"""Image decoding shared by the dashboard, the data pipeline and prediction.

`read_image_checked` is the edge for images a user brings (uploads, folders, CLI paths): every
way such a file can be bad becomes an `ImageRejected` whose message names the file and the problem.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# White, like the studio background of catalogue photos: transparent pixels become this.
BACKGROUND = (255, 255, 255)
# Formats a user may bring, by Pillow's name -> the file extensions they come with.
ACCEPTED_FORMATS = {"JPEG": ("jpg", "jpeg"), "PNG": ("png",), "WEBP": ("webp",), "AVIF": ("avif",)}
ACCEPTED_EXTENSIONS = tuple(ext for exts in ACCEPTED_FORMATS.values() for ext in exts)
# Decompression-bomb guard: refuse larger images before decoding them (80 MP is ~240 MB of RGB; below
# Pillow's own warning threshold, so every refusal says the same thing).
MAX_PIXELS = 80_000_000


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
    """Any mode (L, P, CMYK, RGBA, LA, I;16 ...) as RGB; alpha is composited on white."""
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def thumbnail_jpeg(path: str | Path, max_side: int = 192, quality: int = 85) -> bytes:
    """A JPEG thumbnail whose longer side is at most `max_side`, as bytes (for caching and display)."""
    image = open_rgb(path, max_side=max_side)
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def read_image_checked(
    source: str | Path | bytes, name: str | None = None, max_side: int | None = None
) -> Image.Image:
    """Decode a user's image (a path, or the bytes of an upload) as RGB, transparency on white,
    EXIF rotation applied; raise ImageRejected naming `name` (default: the path) and the problem:
    an empty file, not an image, a format other than ACCEPTED_FORMATS, more than MAX_PIXELS
    pixels (checked from the header, before decoding), or a truncated or corrupt file.

    With `max_side`, a JPEG is decoded with `draft()` straight to about that size or a little
    more (as `open_rgb`); other formats, and the pixel limit, are unaffected.
    """
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1):
        raise ValueError(f"max_side must be a positive int or None, got {max_side!r}")
    label = name if name is not None else str(source) if not isinstance(source, bytes) else "upload"
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as err:
        raise ImageRejected(f"{label}: cannot read the file ({err.strerror or err})") from err
    if not data:
        raise ImageRejected(f"{label}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS) + _READABLE_ONLY)
    except UnidentifiedImageError as err:
        raise ImageRejected(f"{label}: not an image, or a format that cannot be read "
                            f"(accepted: {', '.join(ACCEPTED_FORMATS)})") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        pixels = re.search(r"\((\d+) pixels\)", str(err))  # Pillow's message: "Image size (N pixels) exceeds ..."
        raise ImageRejected(_too_large(label, f"{int(pixels[1]):,} pixels" if pixels else "its size")) from err
    except (OSError, SyntaxError, ValueError) as err:  # a header cut short or broken
        raise ImageRejected(f"{label}: the image data is truncated or corrupt ({err})") from err
    with image:
        if image.format not in ACCEPTED_FORMATS:
            raise ImageRejected(f"{label}: a {image.format} image; accepted formats are {', '.join(ACCEPTED_FORMATS)}")
        pixels = image.width * image.height
        if pixels > MAX_PIXELS:
            raise ImageRejected(_too_large(label, f"{image.width}x{image.height} pixels"))
        try:
            if max_side is not None and image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
        except (OSError, SyntaxError, ValueError) as err:  # truncated data, broken chunks
            raise ImageRejected(f"{label}: the image data is truncated or corrupt ({err})") from err


def _too_large(label: str, size: str) -> str:
    return f"{label}: {size}, more than the {MAX_PIXELS // 1_000_000} megapixel limit (refused as a possible decompression bomb)"


# Identified only to say which format a refused file is, never decoded.
_READABLE_ONLY = ["GIF", "BMP", "TIFF", "ICO", "PPM"]
