"""Explore: what is in the catalogue, how skewed it is, and the photos behind the labels."""

import streamlit as st

from core.access.roles import Permission
from core.data import HEADS
from core.data.profile import (
    MISSING_LABEL,
    column_profile,
    filter_rows,
    labels_text,
    rare_policy_preview,
    top_n_counts,
    year_counts,
)
from core.data.schema import imbalance_table
from core.data.split import TEST, split_distribution
from dashboard import charts
from dashboard.bulk_labels import bulk_label
from dashboard.datasets import current_catalogue, current_split, taxonomy_of
from dashboard.gallery import photo_grid
from dashboard.identity import person
from dashboard.queue_state import TAXONOMY_SOURCE, queue_for_review
from dashboard.text import code
from training.config import TrainConfig, resolve_rare_min_count


def head_choice(key: str, label: str = "Attribute") -> str:
    return st.segmented_control(label, HEADS, default="articleType", key=key) or "articleType"


def distributions(catalogue) -> None:
    frame = catalogue.frame
    st.subheader("Label distributions")
    head = head_choice("dist_head")
    left, right = st.columns(2)
    top_n = left.slider("Classes shown (the rest grouped as “others”)", 5, 60, 20, key="dist_top_n")
    log_scale = right.toggle("Log scale", key="dist_log")
    counts = top_n_counts(frame, head, top_n)
    st.plotly_chart(charts.counts_bar(counts, f"{head}: rows per class", log_scale), key="dist_chart")


def imbalance(catalogue) -> None:
    st.subheader("Class imbalance")
    frame = catalogue.frame
    default = TrainConfig()  # start from what a new run does on this catalogue
    train_rows = int((current_split(catalogue) == "train").sum())
    automatic = resolve_rare_min_count(default, train_rows)
    left, right = st.columns([2, 1])
    threshold = left.slider(
        "Rare-class threshold (rows)", 0, 1000, automatic, step=1, key="rare_threshold",
        help=f"Classes with fewer rows than this are rare: merged into Other (the default recipe: under {automatic} "
             f"of its {train_rows:,} training rows, 0.2 %) or ignored (the seed's policy: under 500 rows).",
    )
    policy = right.radio("Rare classes become", ["other", "ignore"], horizontal=True, key="rare_policy",
                         format_func={"ignore": "None (ignored)", "other": "Other"}.get)
    table = imbalance_table(frame, threshold)
    st.dataframe(
        table, hide_index=True,
        column_config={
            "imbalance_ratio": st.column_config.NumberColumn("largest / smallest", format="%.0f×"),
            "rows_affected_share": st.column_config.ProgressColumn("share of rows affected", format="percent",
                                                                   min_value=0.0, max_value=1.0),
        },
    )
    head = head_choice("rare_head", "What happens to each class of")
    preview = rare_policy_preview(frame, head, policy, threshold)
    changed = int(preview["rare"].sum())
    st.caption(f"{changed} of {len(preview)} {head} classes are under {threshold} rows.")
    st.dataframe(preview, hide_index=True, height=260)


def completeness(catalogue) -> None:
    st.subheader("Missing and unique values per column")
    st.dataframe(
        column_profile(catalogue.frame),
        column_config={"missing_share": st.column_config.NumberColumn("missing share", format="percent")},
    )


def split_view(catalogue) -> None:
    st.subheader("Train / validation split")
    split = current_split(catalogue)
    counts = split.value_counts()
    test = counts.get(TEST, 0)
    st.caption(
        f"The default split of a new run (seed 0, 20% validation, stratified on articleType): "
        f"{counts.get('train', 0):,} train, {counts.get('val', 0):,} val"
        + (f"; {test:,} rows are the dataset's fixed test part, which every run is scored on and none trains or "
           "validates on." if test else ".")
    )
    head = head_choice("split_head")
    distribution = split_distribution(catalogue.frame, split, head)
    top = distribution.loc[(distribution["train"] + distribution["val"]).sort_values(ascending=False).index[:25]]
    st.plotly_chart(charts.split_bars(top, head), key="split_chart")


def years(catalogue) -> None:
    st.plotly_chart(charts.year_histogram(year_counts(catalogue.frame)), key="year_chart")


def grid_filters(frame) -> dict[str, list[str]]:
    with st.expander("Filters", expanded=True):
        columns = st.columns(4)
        filters = {}
        for index, head in enumerate(HEADS):
            options = sorted(frame[head].dropna().unique()) + ([MISSING_LABEL] if frame[head].isna().any() else [])
            filters[head] = columns[index % 4].multiselect(head, options, key=f"filter_{head}")
    return filters


def image_grid(catalogue) -> None:
    st.subheader("Photos")
    rows = filter_rows(catalogue.frame, grid_filters(catalogue.frame))
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    page_size = left.selectbox("Photos per page", [24, 48, 96], key="grid_page_size")
    right.caption(f"{len(rows):,} products match.")
    if rows.empty:
        st.info("No product matches these filters.")
        return
    bulk_label(catalogue, rows["id"].tolist(), "grid")
    photo_grid(rows, catalogue, lambda row: [labels_text(row)], key="grid", page_size=page_size)


def taxonomy(catalogue) -> None:
    st.subheader("Taxonomy")
    learned, broken = taxonomy_of(catalogue)
    st.caption("Learned from this catalogue: the subCategory and masterCategory each articleType goes under, "
               "and the gender and usage values that go with it (a value is valid when it is the commonest, or "
               "carried by at least 2 rows and, in the hierarchy, 2 % of them). Proposals always follow it.")
    st.plotly_chart(charts.taxonomy_sunburst(learned.tree()), key="taxonomy_chart")
    rows = broken["id"].nunique()
    st.markdown(f"**{rows:,} rows break it** ({len(broken):,} broken relations): a label issue each, "
                "to be looked at by a person.")
    if broken.empty:
        return
    st.dataframe(broken, hide_index=True, height=300, column_config={
        "id": st.column_config.NumberColumn(format="%d"), "valid_parents": "expected"})
    if st.button(f"Review these {rows:,} rows", key="taxonomy_review", icon=":material/fact_check:",
                 disabled=not person().may(Permission.REVIEW), help="For reviewers and admins"):
        queue_for_review(catalogue, broken["id"].drop_duplicates().tolist(), TAXONOMY_SOURCE)


def main() -> None:
    st.title("Explore")
    catalogue = current_catalogue()
    if catalogue is None:
        return
    frame = catalogue.frame
    st.caption(f"{code(catalogue.root)} · {len(frame):,} products with a photo")
    # Only the open tab is drawn: the browser draws one tab's charts, tables and photos per visit.
    tabs = st.tabs(["Distributions", "Imbalance", "Taxonomy", "Split & years", "Photos"], key="explore.section",
                   on_change="rerun")
    sections = ((distributions, completeness), (imbalance,), (taxonomy,), (split_view, years), (image_grid,))
    for tab, parts in zip(tabs, sections):
        if tab.open:
            with tab:
                for part in parts:
                    part(catalogue)


main()
