"""A run's model as the pages use it: loaded once per version of its checkpoint, and its proposals
for photos cached per version of checkpoint and photo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.labels.queues import PhotoProposal, top_proposals
from core.labels.tables import Item
from core.model.predictor import Predictor
from training.checkpoints import load_predictor
from training.registry import RunRecord
from training.run_folder import RunFolder

TOP_K = 3  # guesses per head shown to a reviewer
PROPOSAL_CHUNK = 64  # photos per cached batch of proposals: the progress bar moves between them


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _predictor(folder: str, stamp: int) -> Predictor:
    return load_predictor(folder, "best")


def _checkpoint_stamp(record: RunRecord) -> int:
    """Changes when the run's best checkpoint does, so cached models and proposals are renewed."""
    return RunFolder(record.folder).checkpoint("best").stat().st_mtime_ns


def _file_stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:  # gone: the prediction says so
        return -1


def predictor_of(record: RunRecord) -> Predictor:
    """The run's best checkpoint, loaded once per version of the file."""
    return _predictor(record.folder, _checkpoint_stamp(record))


@dataclass(frozen=True)
class Guesses:
    """One photo's proposals for a reviewer: per head the proposal then the next guesses (label,
    confidence), whether the proposal needs no person at the default target error, and whether
    the photo is like the calibration photos (core.trust.typicality; True without a gate)."""

    labels: dict[str, list[tuple[str, float]]]
    accepted: dict[str, bool]
    typical: bool = True


@st.cache_data(show_spinner=False, max_entries=4096)
def _guesses(folder: str, stamp: int, path: str, image_stamp: int) -> Guesses | str:
    [result] = _predictor(folder, stamp).predict_files([path], top_k=TOP_K)
    if result.error is not None:
        return result.error
    return Guesses({head: [(guess.label, guess.p) for guess in guesses]
                    for head, guesses in result.predictions.items()},
                   {head: (result.accepted or {}).get(head) is not None for head in result.predictions},
                   result.typical)


def guesses_for(record: RunRecord, item: Item) -> Guesses | str:
    """The model's proposals for the item's photo (TOP_K guesses per head), or why it cannot be read."""
    return _guesses(record.folder, _checkpoint_stamp(record), str(item.path), _file_stamp(item.path))


@st.cache_data(show_spinner=False, max_entries=1024)
def _proposals(folder: str, stamp: int, photos: tuple[tuple[int, str, int], ...]) -> dict[int, PhotoProposal | str]:
    """The run's top proposals for (item, path, file stamp) photos, once per checkpoint and photos."""
    return top_proposals(_predictor(folder, stamp), {item: path for item, path, _ in photos})


def proposals_for(record: RunRecord, photos: list[Item],
                  what: str = "Checking the new photos") -> dict[int, PhotoProposal | str]:
    """The run's top proposals for `photos`, computed (and cached) PROPOSAL_CHUNK photos at a time,
    with a progress bar saying `what` is done."""
    stamps = [(item.item, str(item.path), _file_stamp(item.path)) for item in photos]
    bar, proposals = st.empty(), {}
    for start in range(0, len(stamps), PROPOSAL_CHUNK):
        bar.progress(start / len(stamps), text=f"{what}: {start:,} of {len(stamps):,}")
        proposals.update(_proposals(record.folder, _checkpoint_stamp(record),
                                    tuple(stamps[start:start + PROPOSAL_CHUNK])))
    bar.empty()
    return proposals
