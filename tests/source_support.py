"""Sources in a label store, for the tests of what follows their rules (core.labels.sources, predict,
the server, the Trust view): a folder of new photos loaded as a source, a source certified on its
own reviewed photos, and a source whose audits fired its alarm."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from PIL import Image

from core.labels.queues import load_photo_folder
from core.labels.sources import calibrate_source, source_policy
from core.labels.store import LabelStore
from core.labels.tables import Item
from core.trust.abstention import TARGET_ERROR
from core.trust.layer import Trust

from conftest import ANN, BOB

HEAD = "gender"  # the head the scenarios certify and stop
AUDITS_WRONG = 4  # audited tags decided wrong that fire the alarm at a 2 % target (it fires within 3)


def photo_bytes(index: int, mark: int = 0) -> bytes:
    """A small PNG, another for each index (up to 65,536) and `mark` (24 bits)."""
    image = Image.new("RGB", (24, 32), (index % 256, index // 256 % 256, (index * 13) % 256))
    image.putpixel((0, 0), (mark >> 16 & 255, mark >> 8 & 255, mark & 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def new_photos(store: LabelStore, dataset: str | Path, folder: Path, count: int, start: int = 0,
               mark: int = 0) -> list[Item]:
    """`count` new photos (photo_bytes(start ...), `mark`) of a folder named `folder.name`, loaded into
    `dataset` as the Review page loads one: their source, unless the same photos came before."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + count):
        (folder / f"p{index:04d}.png").write_bytes(photo_bytes(index, mark))
    items, refused = load_photo_folder(store, dataset, str(folder), ANN)
    assert not refused
    return items


def certified_source(store: LabelStore, dataset: str | Path, folder: Path, run_id: str, trust: Trust,
                     target_error: float = 0.02) -> list[Item]:
    """A source (`folder`'s name) certified for `run_id` on HEAD at `target_error`: as many new photos
    as its own reviewed photos need (photos of its own: marked by its name), each decided as the run
    proposed it (Men at 0.9999: every threshold passes, down to the lowest), then recalibrated by an
    admin. Returns its photos."""
    _, standing = source_policy(store, dataset, [folder.name], run_id, trust, target_error)
    needed = standing[folder.name].more_needed(HEAD, target_error)
    assert needed, "the run's own guide says how many reviewed photos certify the head"
    items = new_photos(store, dataset, folder, needed, mark=zlib.crc32(folder.name.encode()) & 0xFFFFFF)
    for item in items:
        store.review(item.item, {HEAD: "Men"}, BOB, run_id=run_id, predicted={HEAD: ("Men", 0.9999)})
    calibration = calibrate_source(store, dataset, folder.name, run_id, trust.calibration.selections, ANN)
    assert calibration.selections[HEAD].threshold(target_error) is not None
    return items


def fire_alarm(store: LabelStore, items: list[Item], run_id: str, target_error: float = TARGET_ERROR) -> None:
    """Audits of HEAD on AUDITS_WRONG of `items` (Men would have been accepted at `target_error`),
    each decided Women by a person: the alarm of their source fires at that target."""
    for item in items[:AUDITS_WRONG]:
        store.add_audit(item.item, {HEAD: ("Men", 0.99, 0.5)}, None, run_id, "audit-batch", target_error)
        store.review(item.item, {HEAD: "Women"}, BOB, run_id=run_id, predicted={HEAD: ("Men", 0.99)})
