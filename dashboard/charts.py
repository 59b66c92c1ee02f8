"""Plotly figures the pages render (and one PNG drawn with Pillow); data comes in as the small frames `core` returns.

Labels are untrusted, and plotly reads HTML in every text it draws: each label-derived string a
figure draws goes through `dashboard.text.chart_text`. Where a page reads a click back (the
confusion matrix), the raw class names travel as customdata, never drawn.

The Explore page's figures are built once per input and shared by every session (st.cache_resource:
plotly express takes about a second for them, and every visit is a new session); they are never
changed after they are returned."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from dashboard.text import chart_text

SHARED_FIGURE = st.cache_resource(show_spinner=False, max_entries=64)  # see the module docstring

# Colours of the train and validation splits, the same on every chart.
SPLIT_COLOURS = {"train": "#4C78A8", "val": "#F58518", "not used": "#BAB0AC"}


@SHARED_FIGURE
def counts_bar(counts: pd.DataFrame, title: str, log_scale: bool) -> go.Figure:
    """Horizontal bars of `value`/`count` (from `core.data.profile.top_n_counts`), largest on top."""
    figure = px.bar(
        counts.assign(value=counts["value"].map(chart_text)), x="count", y="value", orientation="h", title=title,
        log_x=log_scale, hover_data={"share": ":.1%"}, labels={"value": "", "count": "rows"},
    )
    figure.update_layout(yaxis={"autorange": "reversed"}, height=max(300, 22 * len(counts) + 120), margin={"t": 50})
    return figure


@SHARED_FIGURE
def split_bars(distribution: pd.DataFrame, head: str) -> go.Figure:
    """Grouped bars of each class's share in train and in val (from `split_distribution`)."""
    shares = distribution[["train_share", "val_share"]].rename(index=chart_text,
                                                              columns={"train_share": "train", "val_share": "val"})
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


@SHARED_FIGURE
def year_histogram(years: pd.DataFrame) -> go.Figure:
    figure = px.bar(years, x="year", y="count", title="Products per year", labels={"count": "rows"})
    figure.update_layout(xaxis={"dtick": 1}, height=320)
    return figure


def loss_curves(epochs: pd.DataFrame) -> go.Figure:
    """Training and validation loss per epoch, from `training.launcher.metrics_frame`."""
    figure = go.Figure()
    for split in ("train", "val"):
        column = f"{split}/loss"
        if column in epochs:
            figure.add_scatter(x=epochs["epoch"], y=epochs[column], name=split, mode="lines+markers",
                               line={"color": SPLIT_COLOURS[split]})
    figure.update_layout(title="Loss per epoch", xaxis={"title": "epoch", "dtick": 1}, yaxis={"title": "loss"},
                         height=320)
    return figure


def head_curves(epochs: pd.DataFrame, heads: tuple[str, ...], metric: str, title: str) -> go.Figure:
    """One line per head of validation `metric` ("acc" or "macro_f1") per epoch, from `metrics_frame`."""
    figure = go.Figure()
    for head in heads:
        column = f"val/{head}/{metric}"
        if column in epochs:
            figure.add_scatter(x=epochs["epoch"], y=epochs[column], name=head, mode="lines+markers")
    figure.update_layout(title=title, xaxis={"title": "epoch", "dtick": 1}, yaxis={"range": [0, 1]}, height=320)
    return figure


def class_f1_bars(table: pd.DataFrame, head: str) -> go.Figure:
    """F1 per class (a `core.evaluation.files.class_table`), best first, coloured by support."""
    ordered = table.sort_values(["f1", "support"], ascending=False, kind="stable")
    figure = px.bar(
        ordered.assign(**{"class": ordered["class"].map(chart_text)}), x="class", y="f1", color="support",
        color_continuous_scale="Viridis", title=f"{head}: F1 per class",
        hover_data={"precision": ":.3f", "recall": ":.3f", "f1": ":.3f", "support": True}, labels={"class": ""},
    )
    figure.update_layout(yaxis={"range": [0, 1]}, xaxis={"tickangle": -60}, height=460)
    return figure


def confusion_heatmap(view, normalised: bool, title: str) -> go.Figure:
    """A `core.evaluation.files.ConfusionView` as a heatmap (counts or row rates), true classes down,
    predicted across; hovering a cell shows its count and rate, and a click selects it (read the
    clicked cell's classes with `clicked_cell`)."""
    counts, rates = view.counts, view.rates
    k = len(view.classes)
    drawn = [chart_text(name) for name in view.classes]  # the axes' categories; the raw names ride in customdata
    row_px = 26 if k <= 30 else 14  # the figure grows with k so that cells stay readable and clickable
    figure = go.Figure(go.Heatmap(
        z=rates if normalised else counts, x=drawn, y=drawn, colorscale="Blues", zmin=0,
        zmax=1 if normalised else None, hoverinfo="skip", colorbar={"title": "rate" if normalised else "rows"},
        text=np.where(counts > 0,
                      np.vectorize(lambda v: f"{v:.0%}" if normalised else f"{v:d}")(rates if normalised else counts),
                      ""),
        texttemplate="%{text}" if k <= 25 else None,
    ))
    # Streamlit's point selection reports scatter points, not heatmap cells: one invisible square
    # marker per cell carries the hover text and the click.
    true_index, predicted_index = np.indices((k, k))
    figure.add_scatter(
        x=[drawn[j] for j in predicted_index.ravel()], y=[drawn[i] for i in true_index.ravel()],
        mode="markers", showlegend=False,
        customdata=[[int(counts[i, j]), float(rates[i, j]), view.classes[i], view.classes[j]]
                    for i, j in zip(true_index.ravel(), predicted_index.ravel())],
        marker={"symbol": "square", "size": row_px - 4, "opacity": 0, "color": "#E45756"},
        selected={"marker": {"opacity": 0.45}}, unselected={"marker": {"opacity": 0}},
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata[0]:,} rows · %{customdata[1]:.1%} of the true class"
                      "<extra></extra>",
    )
    figure.update_layout(
        title=title, height=row_px * k + 280, margin={"t": 60},
        # Fixed ranges: autorange would pad around the cells for the markers' size.
        xaxis={"title": "predicted", "type": "category", "tickangle": -60, "range": [-0.5, k - 0.5]},
        yaxis={"title": "true", "type": "category", "range": [k - 0.5, -0.5]},  # the first class on top
    )
    return figure


def clicked_cell(point: dict) -> tuple[str, str]:
    """The (true, predicted) class names, as the view names them, of a point Streamlit reports
    from a click on `confusion_heatmap`."""
    _, _, true_class, predicted_class = point["customdata"]
    return true_class, predicted_class


def confusion_png(view, normalised: bool, title: str) -> bytes:
    """The heatmap of `confusion_heatmap` as a PNG, drawn with Pillow (plotly's own export needs
    kaleido and a browser; matplotlib is not a dependency)."""
    values = view.rates if normalised else view.counts
    k, cell = len(view.classes), 26 if len(view.classes) <= 30 else 14
    font = ImageFont.load_default(size=12 if cell > 14 else 9)
    label_px = max(int(font.getlength(name)) for name in view.classes) + 10
    top, left = 40, label_px + 60
    image = Image.new("RGB", (left + k * cell + 20, top + k * cell + label_px + 40), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), title, fill="black", font=ImageFont.load_default(size=16))
    peak = float(values.max()) or 1.0
    for i in range(k):
        for j in range(k):
            share = float(values[i, j]) / peak  # white -> blue, as plotly's "Blues"
            colour = tuple(int(255 - share * (255 - end)) for end in (8, 48, 107))
            x, y = left + j * cell, top + i * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour, outline=(230, 230, 230))
            if cell > 14 and values[i, j]:
                text = f"{values[i, j]:.0%}" if normalised else str(int(values[i, j]))
                draw.text((x + cell / 2, y + cell / 2), text, anchor="mm", font=font,
                          fill="white" if share > 0.5 else "black")
    for index, name in enumerate(view.classes):
        draw.text((left - 6, top + index * cell + cell / 2), name, anchor="rm", font=font, fill="black")
        column = Image.new("RGB", (label_px, cell), "white")  # drawn sideways, then turned upright
        ImageDraw.Draw(column).text((label_px - 4, cell / 2), name, anchor="rm", font=font, fill="black")
        image.paste(column.rotate(90, expand=True), (left + index * cell, top + k * cell + 4))
    draw.text((10, top + k * cell // 2), "true", font=font, fill="black")
    draw.text((left + k * cell // 2, image.height - 18), "predicted", font=font, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@SHARED_FIGURE
def taxonomy_sunburst(tree: pd.DataFrame) -> go.Figure:
    """masterCategory > subCategory > articleType with their rows (core.trust.taxonomy.Taxonomy.tree)."""
    path = ["masterCategory", "subCategory", "articleType"]
    figure = px.sunburst(tree.assign(**{level: tree[level].map(chart_text) for level in path}), path=path,
                         values="rows", title="The catalogue's taxonomy (rows per articleType)")
    figure.update_traces(insidetextorientation="radial", hovertemplate="%{id}<br>%{value:,} rows<extra></extra>")
    figure.update_layout(height=620, margin={"t": 50, "l": 0, "r": 0, "b": 0})
    return figure


def reliability_diagram(before: list[dict], after: list[dict], head: str) -> go.Figure:
    """Accuracy against confidence per bin (core.trust.calibration.reliability_bins), before and after
    temperature scaling; a calibrated head lies on the diagonal."""
    figure = go.Figure()
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", name="calibrated", line={"dash": "dot", "color": "#999"})
    for name, bins, colour in (("before", before, "#E45756"), ("after", after, "#4C78A8")):
        figure.add_scatter(x=[b["confidence"] for b in bins], y=[b["accuracy"] for b in bins], mode="lines+markers",
                           name=f"{name} scaling", line={"color": colour}, customdata=[b["rows"] for b in bins],
                           hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>%{customdata:,} rows"
                                         "<extra></extra>")
    figure.update_layout(title=f"{head}: reliability", xaxis={"title": "confidence", "range": [0, 1]},
                         yaxis={"title": "accuracy", "range": [0, 1]}, height=380)
    return figure


def risk_coverage(curve: list[dict], target: float, threshold: float | None, head: str) -> go.Figure:
    """Error among accepted proposals against the share accepted, one point per threshold
    (core.trust.abstention.risk_coverage); the target error and the chosen threshold marked."""
    figure = go.Figure()
    figure.add_scatter(x=[point["coverage"] for point in curve], y=[point["error"] for point in curve],
                       mode="lines+markers", name="threshold", customdata=[point["threshold"] for point in curve],
                       hovertemplate="accept at p ≥ %{customdata:.4f}<br>%{x:.0%} accepted<br>error %{y:.1%}"
                                     "<extra></extra>")
    figure.add_hline(y=target, line={"dash": "dot", "color": "#E45756"}, annotation_text=f"target {target:.0%}")
    chosen = next((point for point in curve if point["threshold"] == threshold), None)
    if chosen is not None:
        figure.add_scatter(x=[chosen["coverage"]], y=[chosen["error"]], mode="markers", name="chosen threshold",
                           marker={"size": 12, "color": "#E45756"})
    figure.update_layout(title=f"{head}: error against coverage",
                         xaxis={"title": "share accepted", "tickformat": ".0%"},
                         yaxis={"title": "error among accepted", "tickformat": ".0%", "rangemode": "tozero"},
                         height=380)
    return figure


# Right and wrong predictions, and photos outside the evaluation, on the data-health map.
OUTCOME_COLOURS = {"right": "#54A24B", "wrong": "#E45756", "not evaluated": "#BAB0AC"}


def embedding_map(points: pd.DataFrame, title: str, colours: dict[str, str] | None = None) -> go.Figure:
    """The photos' 2-D map as WebGL scatter, one trace per value of the categorical column `colour`
    (in its category order; `colours` fixes some values' colours), hovering `id` and `label`. Each
    point carries its id as customdata, so a selection names photos. Dragging zooms and a click picks a
    point; the toolbar's box and lasso select a region (in plotly's select drag mode, a click picks nothing)."""
    figure = go.Figure()
    palette = px.colors.qualitative.Dark24 + px.colors.qualitative.Light24
    for index, value in enumerate(points["colour"].cat.categories):
        members = points[points["colour"] == value]
        if members.empty:
            continue
        figure.add_trace(go.Scattergl(
            x=members["x"], y=members["y"], mode="markers", name=f"{chart_text(value)} ({len(members):,})",
            customdata=members["id"].to_numpy(), text=members["label"].map(chart_text),
            marker={"size": 6, "color": (colours or {}).get(value, palette[index % len(palette)]), "opacity": 0.8},
            hovertemplate="%{customdata}<br>%{text}<extra></extra>",
        ))
    figure.update_layout(title=title, height=640, dragmode="zoom", legend={"itemsizing": "constant"},
                         xaxis={"visible": False}, yaxis={"visible": False}, margin={"t": 50, "l": 10, "r": 10})
    return figure
