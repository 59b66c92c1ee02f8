"""core.images.reading: any image mode decodes to RGB on white; thumbnails are small JPEGs; a user's file
that cannot be read is rejected with a message naming it and the problem."""

import io
import re
import struct
import time
import zlib

import numpy as np
import PIL
import pytest
from PIL import Image, ImageFile, features

from core.images.reading import ImageRejected, open_rgb, read_image_checked, thumbnail_jpeg, to_rgb


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


def jpeg_bytes(size: tuple[int, int] = (240, 320), colour=(200, 30, 30), mode: str = "RGB") -> bytes:
    """A JPEG of `colour`; in RGB with some noise, so that it is photo-sized (~30 KB at 240x320)."""
    image = Image.new(mode, size, colour)
    if mode == "RGB":
        image = Image.blend(image, Image.effect_noise(size, 40).convert("RGB"), 0.3)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def patched_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """`data` (a baseline JPEG) claiming `width` x `height` in its SOF0 header: nothing that large is ever allocated."""
    data = bytearray(data)
    sof0 = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof0 + 5:sof0 + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


PHOTO = jpeg_bytes()


@pytest.mark.parametrize("name, content, problem", [
    ("empty.jpg", b"", "the file is empty (0 bytes)"),
    ("notes.jpg", b"just some text, not a photo\n",
     "not an image, or a format that cannot be read (accepted: JPEG, PNG, WEBP, AVIF)"),
    ("half.jpg", PHOTO[:len(PHOTO) // 2], "the image data is truncated or corrupt"),
    ("bomb.jpg", patched_jpeg_size(PHOTO, 20_000, 20_000),
     "400,000,000 pixels, more than the 80 megapixel limit (refused as a possible decompression bomb)"),
    ("big.jpg", patched_jpeg_size(PHOTO, 10_000, 10_000), "10000x10000 pixels, more than the 80 megapixel limit"),
    ("just-over.jpg", patched_jpeg_size(PHOTO, 9_000, 9_000), "9000x9000 pixels, more than the 80 megapixel limit"),
])
def test_each_rejection_names_the_file_and_the_problem(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageRejected) as caught:
        read_image_checked(path)
    assert str(caught.value).startswith(f"{path}: {problem}")
    with pytest.raises(ImageRejected, match=rf"^upload\.jpg: {re.escape(problem)}"):
        read_image_checked(content, name="upload.jpg")  # an upload's bytes: named as the caller says


def test_a_refused_format_and_a_missing_file_are_named(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "scan.bmp")
    with pytest.raises(ImageRejected, match=r"scan\.bmp: a BMP image; accepted formats are JPEG, PNG, WEBP, AVIF$"):
        read_image_checked(tmp_path / "scan.bmp")
    Image.new("RGB", (8, 8)).save(tmp_path / "anim.gif")
    with pytest.raises(ImageRejected, match=r"anim\.gif: a GIF image"):
        read_image_checked(tmp_path / "anim.gif")
    with pytest.raises(ImageRejected, match=r"gone\.jpg: cannot read the file \(No such file or directory\)$"):
        read_image_checked(tmp_path / "gone.jpg")
    assert isinstance(ImageRejected("x"), ValueError)  # callers that catch ValueError still see it


def test_cmyk_grey_and_alpha_become_rgb_with_alpha_on_white(tmp_path):
    (tmp_path / "cmyk.jpg").write_bytes(jpeg_bytes((16, 16), (0, 255, 255, 0), mode="CMYK"))
    red = np.asarray(read_image_checked(tmp_path / "cmyk.jpg")).mean(axis=(0, 1))
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    Image.new("L", (4, 4), 128).save(tmp_path / "grey.png")
    grey = read_image_checked(tmp_path / "grey.png")
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (128, 128, 128)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(tmp_path / "alpha.png")
    alpha = read_image_checked(tmp_path / "alpha.png")
    assert alpha.mode == "RGB" and alpha.getpixel((1, 1)) == (255, 255, 255) and alpha.getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF"])
def test_webp_and_avif_read_when_pillow_supports_them(tmp_path, fmt):
    if not features.check(fmt.lower()):
        pytest.skip(f"this Pillow ({PIL.__version__}) was built without {fmt} support")
    path = tmp_path / f"photo.{fmt.lower()}"
    Image.new("RGB", (32, 24), (20, 60, 220)).save(path, format=fmt, quality=95)
    image = read_image_checked(path)
    assert image.mode == "RGB" and image.size == (32, 24)
    assert np.abs(np.asarray(image).mean(axis=(0, 1)) - (20, 60, 220)).max() < 12


def test_16_bit_greyscale_png_keeps_its_greys(tmp_path):
    levels = np.array([[0, 4_000, 32_768, 65_535]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    expected = [(0,) * 3, (16,) * 3, (128,) * 3, (255,) * 3]
    for image in (read_image_checked(tmp_path / "grey16.png"), open_rgb(tmp_path / "grey16.png")):
        assert image.mode == "RGB" and [image.getpixel((x, 0)) for x in range(4)] == expected
    as_int32 = Image.fromarray(levels.astype(np.int32))  # mode I: how older Pillows read such a PNG
    assert [to_rgb(as_int32).getpixel((x, 0)) for x in range(4)] == expected
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(tmp_path / "grey16.png", max_side=4)))
    assert abs(thumb.getpixel((1, 0))[0] - 16) < 8  # not white


def patched_png_size(width: int, height: int) -> bytes:
    """A small PNG claiming `width` x `height` in its IHDR chunk (its CRC redone)."""
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")  # type, then width (4), height (4), 5 more bytes, then the CRC of type + data
    data[ihdr + 4:ihdr + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[ihdr + 17:ihdr + 21] = zlib.crc32(bytes(data[ihdr:ihdr + 17])).to_bytes(4, "big")
    return bytes(data)


def patched_progressive_jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="JPEG", progressive=True)
    data = bytearray(buffer.getvalue())
    sof2 = data.index(b"\xff\xc2")
    data[sof2 + 5:sof2 + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_baseline_jpeg_over_the_limit_is_decoded_reduced_when_asked(tmp_path):
    """81 MP, over MAX_PIXELS: refused whole; with max_side, decoded at 1/8 scale (~1.3 MP)."""
    Image.new("L", (9_000, 9_000), 90).save(tmp_path / "huge.jpg", quality=50)
    with pytest.raises(ImageRejected, match="9000x9000 pixels, more than the 80 megapixel limit"):
        read_image_checked(tmp_path / "huge.jpg")
    assert read_image_checked(tmp_path / "huge.jpg", max_side=192).size == (1125, 1125)
    thumb = Image.open(io.BytesIO(thumbnail_jpeg(tmp_path / "huge.jpg", max_side=192)))
    assert thumb.size == (192, 192) and thumb.getpixel((5, 5))[0] == pytest.approx(90, abs=3)
    with pytest.raises(ImageRejected, match="huge.jpg: 9000x9000 pixels decoded, more than the 80"):
        read_image_checked(tmp_path / "huge.jpg", max_side=8_000)  # too large a max_side to reduce it at all


@pytest.mark.parametrize(("content", "problem"), [
    (patched_jpeg_size(PHOTO, 15_000, 15_000), "225,000,000 pixels, more than the 160 megapixel limit"),
    (patched_jpeg_size(PHOTO, 13_000, 13_000), "13000x13000 pixels, more than the 160 megapixel limit"),
    (patched_progressive_jpeg(12_000, 12_000),
     "a progressive JPEG of 12000x12000 pixels, more than the 80 megapixel limit"),
], ids=["225-MP", "169-MP", "progressive-144-MP"])
def test_reduced_decoding_has_its_own_limits(tmp_path, content, problem):
    (tmp_path / "photo.jpg").write_bytes(content)
    with pytest.raises(ImageRejected, match=f"^photo.jpg: {problem}"):
        thumbnail_jpeg(tmp_path / "photo.jpg", max_side=192)


def test_max_side_drafts_a_large_jpeg_and_keeps_the_pixel_check(tmp_path):
    Image.new("RGB", (1800, 2400), (10, 120, 200)).save(tmp_path / "big.jpg")
    assert read_image_checked(tmp_path / "big.jpg").size == (1800, 2400)
    assert read_image_checked(tmp_path / "big.jpg", max_side=448).size == (450, 600)  # DCT scaling by 1/4
    Image.new("RGB", (1800, 2400)).save(tmp_path / "big.png")
    assert read_image_checked(tmp_path / "big.png", max_side=448).size == (1800, 2400)  # not a JPEG: untouched
    (tmp_path / "bomb.jpg").write_bytes(patched_jpeg_size(PHOTO, 20_000, 20_000))
    with pytest.raises(ImageRejected, match="400,000,000 pixels, more than the 160 megapixel limit"):
        read_image_checked(tmp_path / "bomb.jpg", max_side=448)
    (tmp_path / "bomb.png").write_bytes(patched_png_size(14_000, 14_000))  # a PNG is never decoded reduced
    with pytest.raises(ImageRejected, match="196,000,000 pixels, more than the 80 megapixel limit"):
        read_image_checked(tmp_path / "bomb.png", max_side=448)
    with pytest.raises(ValueError, match="max_side must be a positive int or None, got 0"):
        read_image_checked(tmp_path / "big.jpg", max_side=0)


PNG_COLOUR_TYPES = {"L": (0, 1), "RGB": (2, 3), "LA": (4, 2), "RGBA": (6, 4)}  # PNG colour type, channels


def png_of_zeros(width: int, height: int, bits: int, colour: str = "L", rows: int | None = None) -> bytes:
    """A valid PNG of `width` x `height` black pixels at `bits` per sample, small whatever its canvas
    (its rows of zeros compress ~1000:1); with `rows`, only that many rows of data follow the header
    (enough to open it and read its header, never to decode it)."""
    colour_type, channels = PNG_COLOUR_TYPES[colour]
    row = bytes(1 + width * channels * bits // 8)  # filter byte 0, then the samples
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows)) + compressor.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def never_decoded(monkeypatch):
    """Decoding any image fails the test: what is refused is refused from its header."""
    def load(self):
        raise AssertionError(f"a {self.size} {self.mode} image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_the_probes_16_bit_bomb_is_refused_from_its_header(tmp_path, never_decoded):
    """The probe's file: 8900 x 8900 16-bit grey (79 MP, under MAX_PIXELS), ~150 KB, 10 s and 1.5 GB to decode."""
    data = png_of_zeros(8_900, 8_900, 16)
    assert len(data) < 200_000 and Image.open(io.BytesIO(data)).mode == "I;16"
    (tmp_path / "grey16.png").write_bytes(data)
    expected = ("grey16.png: 8900x8900 pixels of 16 bits per sample, more than the 20 megapixel limit for images "
                "of more than 8 bits per sample (refused as a possible decompression bomb)")
    for source in (tmp_path / "grey16.png", data):
        started = time.process_time()
        with pytest.raises(ImageRejected) as refused:
            read_image_checked(source, name="grey16.png")
        assert str(refused.value) == expected and time.process_time() - started < 1
    with pytest.raises(ImageRejected, match="^grey16.png: 8900x8900 pixels of 16 bits"):
        thumbnail_jpeg(tmp_path / "grey16.png", max_side=96)  # the catalogue's thumbnails and training cache


@pytest.mark.parametrize(("width", "height", "bits", "colour", "problem"), [
    (5_000, 5_000, 16, "RGB", "5000x5000 pixels of 16 bits per sample, more than the 20 megapixel limit for images "
                              "of more than 8 bits per sample"),
    (4_500, 4_500, 16, "LA", "4500x4500 pixels of 16 bits per sample"),
    (8_000, 8_000, 8, "RGBA", "8000x8000 pixels of 4 x 8 bits (256 MB decoded), more than the 240 MB decoding limit"),
])
def test_decoding_cost_is_bounded_by_bytes_not_only_pixels(width, height, bits, colour, problem, never_decoded):
    data = png_of_zeros(width, height, bits, colour, rows=1)
    with pytest.raises(ImageRejected, match=f"^photo.png: {re.escape(problem)}"):
        read_image_checked(data, name="photo.png")


@pytest.mark.parametrize(("width", "height", "bits", "colour"), [
    (8_900, 8_900, 8, "L"),  # 79 MP of 1 byte: under both limits
    (8_900, 8_900, 8, "RGB"),  # 79 MP of 3 bytes: what MAX_DECODE_BYTES was sized for
    (7_700, 7_700, 8, "RGBA"),  # 59 MP of 4 bytes
    (4_400, 4_400, 16, "L"),  # 19 MP of 16 bits
])
def test_images_within_the_decoding_limits_go_on_to_be_decoded(width, height, bits, colour, never_decoded):
    with pytest.raises(AssertionError, match=f"a \\({width}, {height}\\) .* image was decoded"):
        read_image_checked(png_of_zeros(width, height, bits, colour, rows=1), name="photo.png")


def test_a_16_bit_png_under_the_limit_decodes_cheaply():
    """4000 x 4000 16-bit grey (16 MP): decoded to RGB black, its 16-bit greys mapped through a table."""
    started = time.process_time()
    image = read_image_checked(png_of_zeros(4_000, 4_000, 16), name="grey16.png")
    assert image.mode == "RGB" and image.size == (4_000, 4_000) and image.getextrema() == ((0, 0),) * 3
    assert time.process_time() - started < 5  # was ~0.7 s with 8-byte arithmetic per pixel, ~0.25 s now


def test_a_photo_that_links_out_of_the_allowed_folders_is_refused_by_name(tmp_path):
    """With the folders a person may use (team mode), a photo file that is a symbolic link out of them
    is not read, and says so by its name; a link that stays inside them is read; without them (the
    command line, one person's own machine) any file is."""
    allowed, outside = tmp_path / "data", tmp_path / "secret"
    (allowed / "images").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (40, 40), (9, 9, 9)).save(outside / "private.jpg")
    Image.new("RGB", (40, 40), (200, 9, 9)).save(allowed / "kept.jpg")
    (allowed / "images" / "1.jpg").symlink_to(outside / "private.jpg")
    (allowed / "images" / "2.jpg").symlink_to(allowed / "kept.jpg")
    (allowed / "images" / "3.jpg").symlink_to("3.jpg")  # a loop
    roots = (allowed.resolve(),)
    outside_message = "1.jpg: lies outside the folders this dashboard may use once its links are followed: not read"
    with pytest.raises(ImageRejected) as refused:
        thumbnail_jpeg(allowed / "images" / "1.jpg", roots=roots)
    assert str(refused.value) == outside_message
    with pytest.raises(ImageRejected, match=re.escape(f"{allowed / 'images' / '1.jpg'}: lies outside")):
        read_image_checked(allowed / "images" / "1.jpg", roots=roots)
    with pytest.raises(ImageRejected, match=r"^3\.jpg: cannot read the file \(.*[Ll]oop"):
        thumbnail_jpeg(allowed / "images" / "3.jpg", roots=roots)
    assert read_image_checked(allowed / "images" / "2.jpg", roots=roots).getpixel((0, 0))[0] > 150
    assert read_image_checked(allowed / "images" / "1.jpg").getpixel((0, 0))[0] < 50
