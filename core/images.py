"""Image decoding shared by the dashboard, the data pipeline and prediction."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

# White, like the studio background of catalogue photos: transparent pixels become this.
BACKGROUND = (255, 255, 255)


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
