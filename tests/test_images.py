"""core.images: any image mode decodes to RGB on white; thumbnails are small JPEGs."""

import io

import numpy as np
from PIL import Image

from core.images import open_rgb, thumbnail_jpeg


def test_modes_become_rgb_with_transparency_on_white(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "alpha.png")
    image = open_rgb(tmp_path / "alpha.png")
    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (255, 255, 255) and image.getpixel((0, 0)) == (0, 0, 255)
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    red = np.asarray(open_rgb(tmp_path / "cmyk.jpg")).mean(axis=(0, 1))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    Image.new("L", (4, 4), 128).save(tmp_path / "grey.png")
    assert open_rgb(tmp_path / "grey.png").getpixel((0, 0)) == (128, 128, 128)


def test_draft_decodes_a_large_jpeg_near_the_asked_size(tmp_path):
    Image.new("RGB", (1800, 2400), (10, 120, 200)).save(tmp_path / "big.jpg")
    image = open_rgb(tmp_path / "big.jpg", max_side=200)
    assert 200 <= max(image.size) < 2400 // 4 + 1  # DCT scaling: 1/8, 1/4 or 1/2 of the original


def test_thumbnail_is_a_jpeg_within_the_bound(tmp_path):
    Image.new("RGB", (240, 320), (200, 30, 30)).save(tmp_path / "p.jpg")
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(tmp_path / "p.jpg", max_side=96)))
    assert thumb.format == "JPEG" and thumb.size == (72, 96)
