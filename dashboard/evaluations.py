"""Runs' evaluations and label issues as the pages read them: cached, and read again when their
files change."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.evaluation.files import Evaluation, evaluated_dataset, load_evaluation, version
from training.registry import RunRecord, RunRegistry
from training.run_folder import VALIDATION, RunFolder


@st.cache_resource(show_spinner="Reading the evaluation…", max_entries=16)
def _evaluation(folder: str, stamp: int) -> Evaluation:
    return load_evaluation(folder)


def evaluation_of(record: RunRecord, name: str) -> Evaluation:
    """The run's evaluation `name`, read once per version of it (shared, never mutated)."""
    folder = RunFolder(record.folder).evaluation(name)
    return _evaluation(str(folder), version(folder))


def dataset_of(record: RunRecord, evaluation: Evaluation) -> str:
    """The catalogue folder the evaluation scored."""
    return evaluated_dataset(evaluation.report, record.config["data"])


def dataset_predictions(dataset: str, first: RunRecord | None, limit: int = 200) -> dict[str, tuple[RunRecord, str]]:
    """Every run's complete predictions on catalogue `dataset` (its validation split, or every row),
    the run `first`'s first, then the other runs' newest first: {what, said for a person: (run, evaluation)}.
    A run finishing never hides another's "Predict all rows"."""
    runs = evaluated_runs(limit)
    if first is not None and first.id in runs:
        runs = {first.id: runs[first.id], **runs}
    return {f"run {record.id}: " + ("its validation split" if name == VALIDATION else f"every row ({name})"):
            (record, name)
            for record in runs.values()
            for name in RunFolder(record.folder).evaluations_of(dataset, record.config["data"])}


def evaluated_runs(limit: int = 200) -> dict[str, RunRecord]:
    """The latest `limit` runs with at least one evaluation, newest first, by id."""
    return {record.id: record for record in RunRegistry().list(limit=limit)
            if record.folder and RunFolder(record.folder).evaluation_names()}


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
