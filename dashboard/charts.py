"""Plotly figures the pages render; data comes in as the small frames `core` returns."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

# Colours of the train and validation splits, the same on every chart.
SPLIT_COLOURS = {"train": "#4C78A8", "val": "#F58518"}


def counts_bar(counts: pd.DataFrame, title: str, log_scale: bool) -> go.Figure:
    """Horizontal bars of `value`/`count` (from `core.data.profile.top_n_counts`), largest on top."""
    figure = px.bar(
        counts, x="count", y="value", orientation="h", title=title, log_x=log_scale,
        hover_data={"share": ":.1%"}, labels={"value": "", "count": "rows"},
    )
    figure.update_layout(yaxis={"autorange": "reversed"}, height=max(300, 22 * len(counts) + 120), margin={"t": 50})
    return figure


def split_bars(distribution: pd.DataFrame, head: str) -> go.Figure:
    """Grouped bars of each class's share in train and in val (from `split_distribution`)."""
    shares = distribution[["train_share", "val_share"]].rename(columns={"train_share": "train", "val_share": "val"})
    long = shares.rename_axis("class").reset_index().melt(id_vars="class", var_name="split", value_name="share")
    figure = px.bar(
        long, x="share", y="class", color="split", barmode="group", orientation="h",
        title=f"{head}: share of each class per split", color_discrete_map=SPLIT_COLOURS,
        labels={"class": ""},
    )
    figure.update_layout(
        yaxis={"autorange": "reversed"}, xaxis={"tickformat": ".0%"}, height=max(300, 30 * len(shares) + 120)
    )
    return figure


def year_histogram(years: pd.DataFrame) -> go.Figure:
    figure = px.bar(years, x="year", y="count", title="Products per year", labels={"count": "rows"})
    figure.update_layout(xaxis={"dtick": 1}, height=320)
    return figure
