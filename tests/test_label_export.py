"""core.labels.store export: a reviewed demo catalogue written back in Kaggle's layout, and its command line."""

from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from core.access.database import DB_URL_ENV
from core.access.roles import Actor, Role
from core.data import HEADS, STYLES_COLUMNS
from core.data.catalogue import load_catalogue
from core.data.demo import generate_demo
from core.labels.corrections import (
    STAGING_MARKER,
    STALE_STAGING_S,
    apply_corrections,
    clear_stale_staging,
    corrections_snapshot,
    export_dataset,
)
from core.labels.store import LabelStore
from core.labels.tables import EXTERNAL_ID_BASE, ReviewStatus

from conftest import ANN, BOB, REPO

N = 50


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo(tmp_path_factory.mktemp("demo") / "demo", n=N, seed=0)


def png(colour: tuple[int, int, int], size=(48, 64), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture()
def reviewed(workspace_home, demo):
    """The demo catalogue with reviews: id0 corrected, id1 accepted, id2 not a product, id3 skipped,
    id4 corrected then undone; a reviewed external PNG (with alpha) and an unreviewed one."""
    catalogue = load_catalogue(demo)
    store = LabelStore(workspace=workspace_home)
    ids = catalogue.frame["id"].tolist()[:5]
    item = {found.product_id: found.item for found in store.add_catalogue_items(catalogue, ids, ANN)}
    store.review(item[ids[0]], {"baseColour": "Teal", "articleType": "Tops, cropped"}, ANN, new_values=["articleType"])
    store.review(item[ids[1]], {head: catalogue.frame.iloc[1][head] for head in HEADS}, BOB)
    store.mark(item[ids[2]], ReviewStatus.NOT_PRODUCT, ANN)
    store.mark(item[ids[3]], ReviewStatus.SKIPPED, BOB)
    store.review(item[ids[4]], {"season": "Spring"}, ANN)
    store.undo_last(ANN)
    dress = store.add_image(catalogue, png((200, 0, 0, 128), mode="RGBA"), "../summer dress.png", ANN)
    labels = {"gender": "Women", "masterCategory": "Apparel", "subCategory": "Dress", "articleType": "Dresses",
              "baseColour": "Red", "season": "Summer", "usage": "Casual"}
    store.review(dress.item, labels, ANN)
    store.add_image(catalogue, png((0, 0, 200)), "hat.png", ANN)  # never reviewed: not exported
    return catalogue, store, ids, dress, labels


def test_export_round_trips_through_load_catalogue(reviewed, tmp_path):
    catalogue, store, ids, dress, labels = reviewed
    calls = []
    report = export_dataset(catalogue, store, tmp_path / "export", ANN, progress=lambda *call: calls.append(call))
    out = tmp_path / "export"
    assert (report.out, report.rows, report.corrected_rows,
            report.dropped_rows, report.external_rows) == (out, N, 1, 1, 1)
    assert calls[-1] == (N, N)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export", "workspace"]  # no staging folder left

    exported = load_catalogue(out)
    frame = exported.frame
    assert exported.report.rows_kept == N and exported.report.lines_read == N
    expected_ids = [product_id for product_id in catalogue.frame["id"] if product_id != ids[2]]
    assert frame["id"].tolist() == [*expected_ids, EXTERNAL_ID_BASE + dress.item]
    assert dress.product_id == EXTERNAL_ID_BASE + dress.item
    original = catalogue.frame.set_index("id")
    rows = frame.set_index("id")
    assert rows.loc[ids[0], "baseColour"] == "Teal" and rows.loc[ids[0], "articleType"] == "Tops, cropped"
    changed = original.loc[expected_ids].copy()
    changed.loc[ids[0], ["baseColour", "articleType"]] = ["Teal", "Tops, cropped"]
    pd.testing.assert_frame_equal(rows.loc[expected_ids], changed)  # every other row and label as it was
    external = rows.loc[EXTERNAL_ID_BASE + dress.item]
    assert {head: external[head] for head in HEADS} == labels
    assert external["productDisplayName"] == "summer dress" and external["year"] is pd.NA

    assert sorted(path.name for path in (out / "images").iterdir()) == sorted(f"{i}.jpg" for i in frame["id"])
    assert (out / "images" / f"{ids[0]}.jpg").samefile(catalogue.image_path(ids[0]))  # hard-linked
    with Image.open(out / "images" / f"{EXTERNAL_ID_BASE + dress.item}.jpg") as photo:
        assert (photo.format, photo.mode, photo.size) == ("JPEG", "RGB", (48, 64))
        red, green, blue = photo.getpixel((10, 10))  # (200, 0, 0) at half opacity on white: about (228, 128, 128)
        assert abs(red - 228) < 8 and abs(green - 128) < 8 and abs(blue - 128) < 8
    assert list((out / "styles.csv").read_text().splitlines()[0].split(",")) == list(STYLES_COLUMNS)


def test_corrections_csv_is_the_log(reviewed, tmp_path):
    catalogue, store, *_ = reviewed
    export_dataset(catalogue, store, tmp_path / "export", ANN)
    written = pd.read_csv(tmp_path / "export" / "corrections.csv", dtype=str, keep_default_na=False)
    log = store.log_frame(catalogue)
    assert list(written.columns) == list(log.columns)
    expected = log.astype(object).where(log.notna(), "").map(str)
    assert written.to_dict("records") == expected.to_dict("records")
    # Each review: its heads + STATUS. id0 3, id1 8, two marks 2, id4's review and its undo 2 + 2, the dress 8.
    assert len(written) == 3 + 8 + 2 + 4 + 8
    assert set(written["kind"]) == {"new_value", "correct", "accept", "review", "not_product", "skip", "undo"}


def test_apply_corrections_matches_the_export(reviewed, tmp_path):
    catalogue, store, ids, dress, _ = reviewed
    snapshot = corrections_snapshot(store, catalogue)
    assert json.loads(json.dumps(snapshot)) == snapshot  # JSON-ready
    assert snapshot["overrides"] == {str(ids[0]): {"articleType": "Tops, cropped", "baseColour": "Teal"}}
    assert snapshot["dropped"] == [ids[2]]
    assert [row["id"] for row in snapshot["extra"]] == [dress.product_id]
    applied = apply_corrections(catalogue, snapshot)
    export_dataset(catalogue, store, tmp_path / "export", ANN)
    pd.testing.assert_frame_equal(applied.frame, load_catalogue(tmp_path / "export").frame)
    assert applied.image_path(dress.product_id) == dress.path
    assert applied.image_path(ids[0]) == catalogue.image_path(ids[0])
    assert len(catalogue.frame) == N and catalogue.extra_images == {}  # the original is untouched


def test_export_refuses_a_used_folder_or_the_catalogue_itself(reviewed, tmp_path):
    catalogue, store, *_ = reviewed
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=f"{tmp_path / 'used'} exists and is not an empty folder"):
        export_dataset(catalogue, store, tmp_path / "used", ANN)
    for inside in (catalogue.root, catalogue.root / "images" / "export"):
        with pytest.raises(ValueError, match="cannot export into the catalogue folder"):
            export_dataset(catalogue, store, inside, ANN)
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert export_dataset(catalogue, store, tmp_path / "empty", ANN).rows == N  # an empty folder is fine


def run_cli(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASHION_TAGGER_HOME": str(workspace), "PYTHONPATH": str(REPO)}
    env.pop(DB_URL_ENV, None)
    return subprocess.run([sys.executable, "-m", "core.labels", "export", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_export_command(reviewed, workspace_home, demo, tmp_path):
    done = run_cli(workspace_home, "--data", str(demo), "--out", str(tmp_path / "cli"), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {key: report[key] for key in ("out", "rows", "corrected_rows", "dropped_rows", "external_rows")} == {
        "out": str(tmp_path / "cli"), "rows": N, "corrected_rows": 1, "dropped_rows": 1, "external_rows": 1,
    }
    assert done.stderr.rstrip().endswith(f"writing images: {N}/{N}")
    assert len(load_catalogue(tmp_path / "cli").frame) == N

    text = run_cli(workspace_home, "--data", str(demo), "--out", str(tmp_path / "text"))
    assert text.stdout.splitlines()[0].startswith(f"exported {N} products to {tmp_path / 'text'} in ")
    assert "1 with corrected labels, 1 dropped as not a product, 1 external images added" in text.stdout

    again = run_cli(workspace_home, "--data", str(demo), "--out", str(tmp_path / "cli"))
    assert again.returncode == 2 and again.stderr.startswith(f"error: {tmp_path / 'cli'} exists and is not an empty")


def private_copy(demo: Path, root: Path) -> Path:
    """A copy of the demo catalogue a test may damage."""
    (root / "images").mkdir(parents=True)
    (root / "styles.csv").write_bytes((demo / "styles.csv").read_bytes())
    for path in (demo / "images").iterdir():
        (root / "images" / path.name).write_bytes(path.read_bytes())
    return root


def test_export_skips_and_names_photos_it_cannot_write(workspace_home, demo, tmp_path):
    """A folder named <id>.jpg, an empty file, a symbolic link loop and an upload gone bad: each
    skipped with its reason, the rest exported; the rows stay in styles.csv, without a photo."""
    catalogue = load_catalogue(private_copy(demo, tmp_path / "data"))
    store = LabelStore(workspace=workspace_home)
    hat = store.add_image(catalogue, png((0, 0, 200)), "hat.png", ANN)
    store.review(hat.item, {head: "x" for head in HEADS}, ANN)
    ids = catalogue.frame["id"].tolist()[:3]
    images = catalogue.images_dir
    (images / f"{ids[0]}.jpg").unlink()
    (images / f"{ids[0]}.jpg").mkdir()
    (images / f"{ids[1]}.jpg").write_bytes(b"")
    (images / f"{ids[2]}.jpg").unlink()
    (images / f"{ids[2]}.jpg").symlink_to(f"{ids[2]}.jpg")
    hat.path.write_bytes(b"no longer a png")

    report = export_dataset(catalogue, store, tmp_path / "export", ANN)
    assert report.skipped_images == {
        ids[0]: f"{ids[0]}.jpg: a folder, not a photo",
        ids[1]: f"{ids[1]}.jpg: the file is empty (0 bytes)",
        ids[2]: f"{ids[2]}.jpg: Too many levels of symbolic links",
        hat.product_id: f"{hat.path.name}: not an image, or a format that cannot be read "
                        "(accepted: JPEG, PNG, WEBP, AVIF)",
    }
    assert report.notes()[0] == f"photo of {ids[0]} not written: {ids[0]}.jpg: a folder, not a photo"
    assert json.loads(json.dumps(report.as_dict()))["skipped_images"][str(ids[1])].endswith("(0 bytes)")
    assert report.rows == N + 1
    written = sorted(path.name for path in (tmp_path / "export" / "images").iterdir())
    assert written == sorted(f"{i}.jpg" for i in catalogue.frame["id"].tolist()[3:])
    exported = load_catalogue(tmp_path / "export").report
    assert (exported.lines_read, exported.rows_without_image, exported.rows_kept) == (N + 1, 4, N - 3)

    done = run_cli(workspace_home, "--data", str(catalogue.root), "--out", str(tmp_path / "cli"))
    assert done.returncode == 0, done.stderr
    assert f"note: photo of {ids[1]} not written: {ids[1]}.jpg: the file is empty (0 bytes)" in done.stdout.splitlines()


def test_an_export_skips_a_photo_that_links_out_of_the_folders_the_admin_may_use(workspace_home, demo, tmp_path):
    """In team mode a catalogue photo that is a symbolic link out of the allowed folders is not
    copied into the export (where anyone who may open the export would see it): skipped, named."""
    root = tmp_path / "data"
    catalogue = load_catalogue(private_copy(demo, root / "demo"))
    store = LabelStore(workspace=workspace_home)
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (40, 40), (9, 9, 9)).save(secret)
    linked, inside = catalogue.frame["id"].tolist()[:2]
    (catalogue.images_dir / f"{linked}.jpg").unlink()
    (catalogue.images_dir / f"{linked}.jpg").symlink_to(secret)
    (catalogue.images_dir / f"{inside}.jpg").rename(root / "kept.jpg")
    (catalogue.images_dir / f"{inside}.jpg").symlink_to(root / "kept.jpg")  # a link within them is followed
    admin = Actor("ann", Role.ADMIN, roots=(root.resolve(),))
    report = export_dataset(catalogue, store, root / "export", admin)
    assert report.skipped_images == {
        linked: f"{linked}.jpg: lies outside the folders this dashboard may use once its links are followed: not read"}
    assert not (root / "export" / "images" / f"{linked}.jpg").exists()
    assert (root / "export" / "images" / f"{inside}.jpg").read_bytes() == (root / "kept.jpg").read_bytes()
    assert report.rows == N


def test_an_export_killed_midway_leaves_debris_the_next_one_clears(reviewed, workspace_home, demo, tmp_path):
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys\n"
        "from core.access.roles import command_line_actor\n"
        "from core.labels.corrections import export_dataset\n"
        "from core.data.catalogue import load_catalogue\n"
        "from pathlib import Path\n"
        "from core.labels.store import LabelStore\n"
        "def die(done, total):\n"
        "    if done >= total // 2: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"store = LabelStore(workspace=Path({str(workspace_home)!r}))\n"
        f"export_dataset(load_catalogue({str(demo)!r}), store, {str(tmp_path / 'first')!r}, command_line_actor(), "
        "progress=die)\n"
    )], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    (debris,) = [path for path in tmp_path.iterdir() if path.name.startswith(".first-export-")]
    catalogue, store, *_ = reviewed

    recent = export_dataset(catalogue, store, tmp_path / "second", ANN)  # debris this fresh may be a live export
    assert recent.cleared_staging == [] and debris.is_dir()
    old = time.time() - STALE_STAGING_S - 60
    for path in (debris, debris / "images"):
        os.utime(path, (old, old))
    report = export_dataset(catalogue, store, tmp_path / "third", ANN)
    assert report.cleared_staging == [debris.name] and not debris.exists()
    assert report.notes() == [f"removed 1 staging folder(s) left by interrupted exports: {debris.name}"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["second", "third", "workspace"]


def test_stale_staging_is_cleared_only_when_no_export_holds_it(tmp_path):
    old = time.time() - STALE_STAGING_S - 60

    def staging(name: str, marker: bool = True, age: float = old) -> Path:
        folder = tmp_path / name
        (folder / "images").mkdir(parents=True)
        if marker:
            (folder / STAGING_MARKER).write_text("")
        for path in (folder / "images", folder):
            os.utime(path, (age, age))
        return folder

    stale, fresh, held = staging(".a-export-1"), staging(".b-export-2", age=time.time()), staging(".c-export-3")
    unmarked = staging(".mine", marker=False)
    with open(held / STAGING_MARKER) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a live export holds its own
        assert clear_stale_staging(tmp_path) == [stale.name]
    assert not stale.exists() and fresh.is_dir() and held.is_dir() and unmarked.is_dir()
    assert clear_stale_staging(tmp_path) == [held.name]  # its export has ended


def test_labels_with_quotes_round_trip_and_line_breaks_are_refused(workspace_home, demo, tmp_path):
    catalogue = load_catalogue(demo)
    store = LabelStore(workspace=workspace_home)
    (item,) = store.add_catalogue_items(catalogue, catalogue.frame["id"].tolist()[:1], ANN)
    with pytest.raises(ValueError, match=r"the articleType label must be one line of text, got 'Tops\\nlong'"):
        store.review(item.item, {"articleType": "Tops\nlong"}, ANN)
    store.review(item.item, {"articleType": 'Tops 12" "long'}, ANN, new_values=["articleType"])
    export_dataset(catalogue, store, tmp_path / "export", ANN)
    exported = load_catalogue(tmp_path / "export")
    assert exported.frame["articleType"].iloc[0] == 'Tops 12" "long'
    assert exported.report.quotes_repaired == 0 and exported.report.lines_read == N
