"""Home: the open dataset, its cleaning report, and where to go next."""

import streamlit as st

from core.labels.corrections import corrections_snapshot
from dashboard import pages
from dashboard.datasets import current_catalogue
from dashboard.identity import login_configured, person
from dashboard.labels import label_store
from dashboard.text import code, plain
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
    columns[2].metric("Duplicate ids", f"{report.duplicate_ids:,}",
                      help="Later rows with an id seen before; the first is kept")
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
        by = f" · by {plain(record.launched_by)}" if record.launched_by else ""
        st.markdown(f"{STATUS_ICONS[record.status]} {code(record.id)} **{record.status}**{best}{by}")
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


def sharing() -> None:
    """Who is using the dashboard, and in local mode how a team turns the login on."""
    actor = person()
    if login_configured():
        st.caption(f"Team mode: you are {plain(actor.shown)}, {actor.role}.")
        return
    st.info("Local mode: one user, on this machine only (the server listens on 127.0.0.1), as an admin. "
            "To share it with a team, configure a login: an OpenID Connect provider under [auth] in "
            ".streamlit/secrets.toml, roles in the access file, then bind to a network address. "
            "See the README, “Team deployment”.", icon=":material/computer:")


def main() -> None:
    st.title("Fashion Tagger")
    st.write(
        "Tag product photos with seven attributes at once — gender, masterCategory, subCategory, "
        "articleType, baseColour, season, usage — and keep the catalogue's labels clean."
    )
    sharing()
    catalogue = current_catalogue()
    if catalogue is None:
        return
    st.subheader("Dataset")
    st.markdown(code(catalogue.root))
    cleaning_report(catalogue.report)
    pages.link(pages.EXPLORE, "Explore the catalogue")
    recent_runs()
    reviewed_labels(catalogue)


main()
