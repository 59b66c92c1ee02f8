"""UI pieces about training runs that more than one page shows."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.data import HEADS
from dashboard import charts
from dashboard.pages import EVALUATE, REVIEW, switch_to
from training.registry import RunRecord

EVALUATE_RUN_KEY = "evaluate.run"  # the run the Evaluate page shows
REVIEW_RUN_KEY = "review.run"  # the run whose model the Review page proposes with


def heads_of(record: RunRecord | None) -> list[str]:
    """The heads a run proposes; every head without a run (people decide them all)."""
    return list(record.config["heads"]) if record is not None else list(HEADS)


def training_curves(epochs: pd.DataFrame, heads: tuple[str, ...], key: str) -> None:
    """Loss and per-head validation accuracy / macro-F1 per epoch (`training.status.metrics_frame`), side by side."""
    left, middle, right = st.columns(3)
    left.plotly_chart(charts.loss_curves(epochs), key=f"{key}_loss_curves")
    middle.plotly_chart(charts.head_curves(epochs, heads, "acc", "Validation accuracy per head"),
                        key=f"{key}_acc_curves")
    right.plotly_chart(charts.head_curves(epochs, heads, "macro_f1", "Validation macro-F1 per head"),
                       key=f"{key}_f1_curves")


def open_run_buttons(run_id: str) -> None:
    """Buttons that open the run on the Evaluate page, or its model on the Review page."""
    left, right, _ = st.columns([1, 1, 2])
    for where, label, key, page in ((left, "Evaluate this run", EVALUATE_RUN_KEY, EVALUATE),
                                    (right, "Review with this model", REVIEW_RUN_KEY, REVIEW)):
        if where.button(label, key=f"open.{key}.{run_id}", icon=page.icon):
            st.session_state[key] = run_id
            switch_to(page)
