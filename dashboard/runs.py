"""UI pieces about training runs that more than one page shows."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts


def training_curves(epochs: pd.DataFrame, heads: tuple[str, ...], key: str) -> None:
    """Loss and per-head validation accuracy / macro-F1 per epoch (`training.launcher.metrics_frame`), side by side."""
    left, middle, right = st.columns(3)
    left.plotly_chart(charts.loss_curves(epochs), key=f"{key}_loss_curves")
    middle.plotly_chart(charts.head_curves(epochs, heads, "acc", "Validation accuracy per head"), key=f"{key}_acc_curves")
    right.plotly_chart(charts.head_curves(epochs, heads, "macro_f1", "Validation macro-F1 per head"), key=f"{key}_f1_curves")
