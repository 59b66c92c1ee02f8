"""Runs' evaluations and label issues as the pages read them: cached, and read again when their
files change; and which evaluations of two runs a comparison puts side by side."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from core.choices import Choice
from core.data.catalogue import same_dataset
from core.evaluation.files import Evaluation, evaluated_dataset, load_evaluation, read_report, version
from training.registry import RunRecord, RunRegistry
from training.run_folder import TEST_PART, VALIDATION, RunFolder


@st.cache_resource(show_spinner="Reading the evaluation…", max_entries=16)
def _evaluation(folder: str, stamp: int) -> Evaluation:
    return load_evaluation(folder)


def evaluation_of(record: RunRecord, name: str) -> Evaluation:
    """The run's evaluation `name`, read once per version of it (shared, never mutated)."""
    folder = RunFolder(record.folder).evaluation(name)
    return _evaluation(str(folder), version(folder))


def evaluation_label(name: str) -> str:
    """An evaluation folder's name said for a person: "validation split", "test part", or for every row of
    a catalogue its folder's name."""
    return {VALIDATION: "validation split", TEST_PART: "test part"}.get(name, name.removeprefix(f"{VALIDATION}-"))


def dataset_of(record: RunRecord, evaluation: Evaluation) -> str:
    """The catalogue folder the evaluation scored."""
    return evaluated_dataset(evaluation.report, record.config["data"])


def dataset_predictions(dataset: str, first: RunRecord | None, limit: int = 200) -> dict[str, tuple[RunRecord, str]]:
    """Every run's complete predictions on catalogue `dataset` (its validation split, its test part, or every row),
    the run `first`'s first, then the other runs' newest first: {what, said for a person: (run, evaluation)}.
    A run finishing never hides another's "Predict all rows"."""
    runs = evaluated_runs(limit)
    if first is not None and first.id in runs:
        runs = {first.id: runs[first.id], **runs}
    return {f"run {record.id}: " + (f"its {evaluation_label(name)}" if name in (VALIDATION, TEST_PART)
                                    else f"every row ({name})"):
            (record, name)
            for record in runs.values()
            for name in RunFolder(record.folder).evaluations_of(dataset, record.config["data"])}


def evaluated_runs(limit: int = 200) -> dict[str, RunRecord]:
    """The latest `limit` runs with at least one evaluation, newest first, by id."""
    return {record.id: record for record in RunRegistry().list(limit=limit)
            if record.folder and RunFolder(record.folder).evaluation_names()}


class Basis(Choice):
    """What a comparison of two runs stands on."""

    TEST_PART = "test part"  # both runs' evaluations on their dataset's fixed test part: the same rows
    SHARED_ROWS = "shared rows"  # the rows two evaluations both scored, whatever each scored besides


@dataclass(frozen=True)
class Comparison:
    """Which evaluation of run a and which of run b a comparison puts side by side, and why."""

    a: str  # an evaluation folder's name in run a's folder
    b: str  # in run b's
    basis: Basis
    why: str  # SHARED_ROWS: why not the test part, for a person ("" for TEST_PART)


def comparison(record_a: RunRecord, shown: str, record_b: RunRecord) -> Comparison | None:
    """What runs a (the page shows its evaluation `shown`) and b are compared on: both runs' evaluations
    on the dataset's fixed test part when both runs of one dataset have one; else a's `shown` and b's
    evaluation of the same catalogue (the one of the same name first), on the rows both scored. None
    when b has no evaluation of that catalogue."""
    folder_a, folder_b = RunFolder(record_a.folder), RunFolder(record_b.folder)
    data_a, data_b = record_a.config["data"], record_b.config["data"]
    without = [f"run {record.id}" for record, folder in ((record_a, folder_a), (record_b, folder_b))
               if TEST_PART not in folder.evaluation_names()]
    if not without and same_dataset(data_a, data_b):
        return Comparison(TEST_PART, TEST_PART, Basis.TEST_PART, "")
    why = (f"{' and '.join(without)} {'has' if len(without) == 1 else 'have'} no evaluation on the dataset's fixed "
           "test part" if without else "the two runs were trained on different datasets")
    names = folder_b.evaluations_of(evaluated_dataset(read_report(folder_a.evaluation(shown)), data_a), data_b)
    if not names:
        return None
    return Comparison(shown, shown if shown in names else names[0], Basis.SHARED_ROWS, why)


@st.cache_data(show_spinner="Ranking label issues…", max_entries=16)
def _label_issues(folder: str, stamp: tuple[int, ...]) -> pd.DataFrame:
    from training.evaluate import label_issues  # torch and cleanlab: only when a page ranks issues

    return label_issues(folder)


def label_issues_of(folder: str) -> pd.DataFrame:
    """The ranked label issues of a run (its validation split) or a cross-validation folder
    (training.evaluate.label_issues), ranked again when their source changes."""
    run = RunFolder(folder)
    stamps = [run.label_issues.stat().st_mtime_ns] if run.label_issues.is_file() else []
    if run.evaluation().is_dir():
        stamps.append(version(run.evaluation()))
    return _label_issues(folder, tuple(stamps))
