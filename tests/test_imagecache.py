import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.images.cache import (
    MANIFEST,
    SkippedImageWarning,
    build_image_cache,
    cache_folder,
    cached_path,
    cached_side,
    open_cached,
)

N = 60
SIZE = 80  # cached longer side 96: demo photos (240x320) become 72x96


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo") / "data", n=N, seed=3)


@pytest.fixture
def catalogue(demo_root, tmp_path):
    """A private copy of the demo catalogue, so a test may damage its images."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "styles.csv").write_bytes((demo_root / "styles.csv").read_bytes())
    for path in (demo_root / "images").iterdir():
        (root / "images" / path.name).write_bytes(path.read_bytes())
    return load_catalogue(root)


def ids_of(catalogue) -> list[int]:
    return catalogue.frame["id"].tolist()


def build(catalogue, folder: Path, ids=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkippedImageWarning)  # a test expecting skips says so
        return build_image_cache(catalogue, ids_of(catalogue) if ids is None else ids, SIZE, folder, **kwargs)


def test_builds_once_then_reuses(catalogue, tmp_path):
    folder = tmp_path / "cache"
    calls = []
    first = build(catalogue, folder, progress=lambda done, total: calls.append((done, total)))
    assert (first.built, first.reused, first.failed, first.folder) == (N, 0, {}, folder)
    assert sorted(path.name for path in folder.glob("*.jpg")) == sorted(f"{i}.jpg" for i in ids_of(catalogue))
    assert calls[-1] == (N, N) and [done for done, _ in calls] == sorted(done for done, _ in calls)

    second = build(catalogue, folder)
    assert (second.built, second.reused, second.failed) == (0, N, {})
    assert second.as_dict() == {"folder": str(folder), "built": 0, "reused": N, "failed": {},
                                "seconds": second.seconds}


def test_subset_then_superset_builds_only_the_new_ids(catalogue, tmp_path):
    folder, ids = tmp_path / "cache", ids_of(catalogue)
    assert build(catalogue, folder, ids[:20] + ids[:5]).built == 20  # repeats count once
    report = build(catalogue, folder, ids[10:40])
    assert (report.built, report.reused) == (20, 10)


def test_changed_or_missing_copy_rebuilds_exactly_that_one(catalogue, tmp_path):
    folder, ids = tmp_path / "cache", ids_of(catalogue)
    build(catalogue, folder)

    touched = catalogue.image_path(ids[3])
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert (build(catalogue, folder).built, build(catalogue, folder).built) == (1, 0)

    # Replaced by another photo with the old mtime (cp -p): the size gives it away.
    replaced = catalogue.image_path(ids[5])
    stat = replaced.stat()
    Image.new("RGB", (300, 150), (200, 10, 10)).save(replaced, quality=95)
    os.utime(replaced, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    report = build(catalogue, folder)
    assert (report.built, report.reused) == (1, N - 1)
    assert open_cached(folder, ids[5]).size == (96, 48)

    cached_path(folder, ids[7]).unlink()
    assert build(catalogue, folder).built == 1


def test_bad_sources_are_skipped_counted_and_warned(catalogue, tmp_path):
    ids = ids_of(catalogue)
    corrupt, truncated, empty = ids[0], ids[1], ids[2]
    catalogue.image_path(corrupt).write_bytes(np.random.default_rng(0).bytes(5000))
    data = catalogue.image_path(truncated).read_bytes()
    catalogue.image_path(truncated).write_bytes(data[: len(data) // 2])
    catalogue.image_path(empty).write_bytes(b"")

    folder = tmp_path / "cache"
    with pytest.warns(SkippedImageWarning) as caught:
        report = build_image_cache(catalogue, ids, SIZE, folder)
    assert sorted(report.failed) == sorted([corrupt, truncated, empty])
    assert "not an image, or a format that cannot be read" in report.failed[corrupt]
    assert "truncated" in report.failed[truncated]
    assert "the file is empty (0 bytes)" in report.failed[empty]
    assert (report.built, report.reused) == (N - 3, 0)
    messages = [str(warning.message) for warning in caught]
    assert all(any(str(catalogue.image_path(i)) in message for message in messages) for i in report.failed)
    assert not any(cached_path(folder, i).exists() for i in report.failed)
    assert open_cached(folder, ids[3]).size == (72, 96)

    with pytest.warns(SkippedImageWarning):  # retried, and counted again, on every build
        again = build_image_cache(catalogue, ids, SIZE, folder)
    assert (again.built, again.reused, sorted(again.failed)) == (0, N - 3, sorted(report.failed))


def test_catalogue_photos_pass_the_upload_guard(catalogue, tmp_path):
    """A 225 MP photo is skipped with the guard's message (no DecompressionBombError stops the
    build); a 16-bit greyscale PNG saved as <id>.jpg is cached with its greys, not white."""
    from test_images import PHOTO, patched_jpeg_size

    ids = ids_of(catalogue)
    catalogue.image_path(ids[0]).write_bytes(patched_jpeg_size(PHOTO, 15_000, 15_000))
    Image.fromarray(np.full((40, 30), 32_768, dtype=np.uint16)).save(catalogue.image_path(ids[1]), format="PNG")
    with pytest.warns(SkippedImageWarning):
        report = build_image_cache(catalogue, ids, SIZE, tmp_path / "cache")
    assert report.failed == {ids[0]: f"{ids[0]}.jpg: 225,000,000 pixels, more than the 160 megapixel limit "
                                     "(refused as a possible decompression bomb)"}
    grey = np.asarray(open_cached(tmp_path / "cache", ids[1]))
    assert grey.shape == (40, 30, 3) and np.abs(grey.astype(int) - 128).max() <= 2


def test_a_source_gone_bad_after_caching_loses_its_copy(catalogue, tmp_path):
    folder, ids = tmp_path / "cache", ids_of(catalogue)
    build(catalogue, folder)
    catalogue.image_path(ids[0]).write_bytes(b"not a jpeg")
    catalogue.image_path(ids[1]).unlink()
    with pytest.warns(SkippedImageWarning) as caught:
        report = build_image_cache(catalogue, ids, SIZE, folder)
    assert sorted(str(warning.message).split(":")[0] for warning in caught) == sorted(
        f"skipped image {catalogue.image_path(i)}" for i in ids[:2])
    assert sorted(report.failed) == sorted(ids[:2]) and "FileNotFoundError" in report.failed[ids[1]]
    assert not cached_path(folder, ids[0]).exists() and not cached_path(folder, ids[1]).exists()
    assert set(json.loads((folder / MANIFEST).read_text())["sources"]) == {str(i) for i in ids[2:]}


def test_cached_copy_keeps_aspect_and_content(catalogue, tmp_path):
    ids = ids_of(catalogue)
    big, small, grey, rgba = ids[:4]
    Image.new("RGB", (1200, 1600), (30, 120, 200)).save(catalogue.image_path(big))
    Image.new("RGB", (40, 60), (250, 0, 0)).save(catalogue.image_path(small))
    Image.new("L", (320, 160), 77).save(catalogue.image_path(grey), format="JPEG")
    Image.new("RGBA", (100, 100), (0, 0, 0, 0)).save(catalogue.image_path(rgba), format="PNG")  # PNG in .jpg
    folder = tmp_path / "cache"
    build(catalogue, folder)

    assert cached_side(SIZE) == 96 and cached_side(160) == 192
    sizes = {i: open_cached(folder, i).size for i in ids[:5]}
    assert sizes == {big: (72, 96), small: (40, 60), grey: (96, 48), rgba: (96, 96), ids[4]: (72, 96)}
    assert all(open_cached(folder, i).mode == "RGB" for i in ids[:5])
    pixel = np.asarray(open_cached(folder, big), dtype=int)[36, 48]
    assert np.abs(pixel - (30, 120, 200)).max() <= 3
    assert np.asarray(open_cached(folder, grey), dtype=int).std() < 1 and abs(
        np.asarray(open_cached(folder, grey), dtype=int).mean() - 77) <= 2
    assert np.asarray(open_cached(folder, rgba)).min() >= 250  # transparent -> white

    source = np.asarray(Image.open(catalogue.image_path(ids[4])).convert("RGB").resize((72, 96)), dtype=float)
    assert np.abs(np.asarray(open_cached(folder, ids[4]), dtype=float) - source).mean() < 4


def test_cache_folder_is_stable_per_dataset_and_size(tmp_path):
    workspace = tmp_path / "ws"
    a = cache_folder(workspace, tmp_path / "shop" / "data", 160)
    assert a == cache_folder(workspace, tmp_path / "shop" / "x" / ".." / "data", 160)
    assert a.name == "160px" and a.parent.name.startswith("data-") and a.is_relative_to(workspace)
    assert a != cache_folder(workspace, tmp_path / "shop" / "data", 224)
    other = cache_folder(workspace, tmp_path / "other" / "data", 160)
    assert other != a and other.parent.name.startswith("data-")


def test_inputs_are_checked(catalogue, tmp_path):
    with pytest.raises(ValueError, match=r"not in the catalogue .*\[-5, 123456789\]"):
        build_image_cache(catalogue, [ids_of(catalogue)[0], 123456789, -5], SIZE, tmp_path)
    with pytest.raises(ValueError, match="image_size must be a positive int, got 0"):
        build_image_cache(catalogue, ids_of(catalogue), 0, tmp_path)
    with pytest.raises(ValueError, match="workers must be a positive int or None .*got 0"):
        build_image_cache(catalogue, ids_of(catalogue), SIZE, tmp_path, workers=0)


def test_real_sample_photos_of_both_resolutions(real_sample, tmp_path):
    catalogue = load_catalogue(real_sample)
    sizes = {}
    for product_id in catalogue.frame["id"].tolist()[:400]:
        with Image.open(catalogue.image_path(product_id)) as image:
            sizes.setdefault(image.size, []).append(product_id)
    square, portrait = sizes[(224, 224)][:10], sizes[(225, 300)][:10]
    report = build(catalogue, tmp_path / "cache", square + portrait)
    assert (report.built, report.failed) == (20, {})
    assert {open_cached(tmp_path / "cache", i).size for i in square} == {(96, 96)}
    assert {open_cached(tmp_path / "cache", i).size for i in portrait} == {(72, 96)}
