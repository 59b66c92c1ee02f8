"""Home: the open dataset, its cleaning report, and where to go next."""

import streamlit as st

from core.corrections import corrections_snapshot
from dashboard import pages
from dashboard.datasets import current_catalogue
from dashboard.labels import label_store
from training.registry import RunRegistry, RunState

STATUS_ICONS = {
    RunState.QUEUED: ":material/hourglass_empty:", RunState.RUNNING: ":material/play_circle:",
    RunState.FINISHED: ":material/check_circle:", RunState.FAILED: ":material/error:",
    RunState.CANCELLED: ":material/stop_circle:",
}


def cleaning_report(report) -> None:
    columns = st.columns(5)
    columns[0].metric("Lines read", f"{report.lines_read:,}")
    columns[1].metric("Lines repaired", f"{report.lines_repaired + report.quotes_repaired:,}",
                      help=f"{report.lines_repaired:,} with extra commas in the product name, rejoined; "
                           f"{report.quotes_repaired:,} with a quote that does not close, read as a plain character")
    columns[2].metric("Duplicate ids", f"{report.duplicate_ids:,}", help="Later rows with an id seen before; the first is kept")
    columns[3].metric("Rows without image", f"{report.rows_without_image:,}", help="Dropped: images/<id>.jpg is absent")
    columns[4].metric("Products kept", f"{report.rows_kept:,}")
    if report.photo_near_misses:  # file names are untrusted: plain text, never markdown
        st.text(f"Files in images/ that look like photos of those rows but are misnamed (expected <id>.jpg): "
                f"{report.photo_near_misses:,}, e.g. {', '.join(report.near_miss_examples)}")


def recent_runs(limit: int = 5) -> None:
    """The latest runs with their status; the Train page has the rest."""
    st.subheader("Runs")
    records = RunRegistry().list(limit=limit)
    for record in records:
        best = "" if record.best_metric is None else f" · {record.best_metric_name} {record.best_metric:.4f}"
        st.markdown(f"{STATUS_ICONS[record.status]} `{record.id}` **{record.status}**{best}")
    if not records:
        st.caption("No training runs yet.")
    pages.link(pages.TRAIN, "Train a model")
    pages.link(pages.EVALUATE, "Evaluate a run")


def reviewed_labels(catalogue) -> None:
    """What reviewers decided on the open dataset: what the next run trains on, or an export writes."""
    st.subheader("Reviewed labels")
    snapshot = corrections_snapshot(label_store(), catalogue.root)
    counts = {"Corrected rows": len(snapshot["overrides"]), "Not a product": len(snapshot["dropped"]),
              "New photos labelled": len(snapshot["extra"])}
    if not any(counts.values()):
        st.caption("No corrections yet: review doubtful rows and new photos on the Review page.")
    else:
        for column, (label, count) in zip(st.columns(len(counts)), counts.items()):
            column.metric(label, f"{count:,}")
        st.caption("A run trains on them with “Train on reviewed labels” (Train page); Review → Export writes "
                   "them out as a corrected catalogue.")
    pages.link(pages.REVIEW, "Review photos and labels")


def main() -> None:
    st.title("Fashion Tagger")
    st.write(
        "Tag product photos with seven attributes at once — gender, masterCategory, subCategory, "
        "articleType, baseColour, season, usage — and keep the catalogue's labels clean."
    )
    catalogue = current_catalogue()
    if catalogue is None:
        return
    st.subheader("Dataset")
    st.write(f"`{catalogue.root}`")
    cleaning_report(catalogue.report)
    pages.link(pages.EXPLORE, "Explore the catalogue")
    recent_runs()
    reviewed_labels(catalogue)


main()
