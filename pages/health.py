"""Data health: the catalogue's photos as a map, similar photos, near-duplicates and the split leakage
they cause, label disagreements, outliers and image-quality issues; every list leads into Review."""

import time
from functools import partial

import pandas as pd
import streamlit as st

from core.access.roles import Actor, Permission
from core.data import HEADS
from core.data.catalogue import Catalogue
from core.data.profile import labels_text
from core.health.files import Health, group_table, label_disagreements, leaked_ids, leaking_groups
from core.health.image_quality import ISSUE_TYPES, issue_ids
from core.health.similarity import DEFAULT_THRESHOLD
from core.images.reading import ACCEPTED_EXTENSIONS, ImageRejected
from dashboard import pages
from dashboard.bulk_labels import bulk_label
from dashboard.datasets import current_catalogue, thumbnail
from dashboard.gallery import photo_grid
from dashboard.health import (
    OUTCOME,
    colourings,
    health_of,
    map_figure,
    model_runs,
    near_duplicates,
    near_duplicates_found_by,
    similar_to_photo,
    split_of,
)
from dashboard.identity import person
from dashboard.labels import label_store
from dashboard.review_queue import queue_catalogue
from dashboard.text import plain
from training import health as run_health
from training.launcher import health_job, launch_health
from training.processes import log_tail
from training.registry import RunRecord

PRETRAINED = "pretrained"
LABELS_DIFFER_DEFAULT = [head for head in HEADS if head != "baseColour"]  # colour variants differ in colour by design


def choose_model() -> RunRecord | None:
    runs = model_runs()
    choice = st.selectbox(
        "Embeddings from", [PRETRAINED, *runs], key="health.model",
        format_func=lambda c: "the pretrained backbone (no run needed)" if c == PRETRAINED
        else f"run {c} · {runs[c].config.get('backbone')}",
        help="A run's own backbone sees what it learned to tell apart; its split is the one leakage is counted on.")
    return None if choice == PRETRAINED else runs[choice]


def computation(catalogue: Catalogue, record: RunRecord | None) -> Health | None:
    """The health to show, with the background computation's state, its failure, or a button to start it."""
    folder = run_health.folder_of(catalogue, record)
    job = health_job(catalogue, record)
    health = health_of(folder)
    if job.running:
        follow(catalogue, record)
    elif job.started is not None and not job.wrote_since_launch(folder.info):
        st.error("Computing the data health failed; the end of its log:")
        st.code(log_tail(job.log), language=None)
    if job.running:
        return health
    if health is None:
        st.info(f"The data health of these {len(catalogue.frame):,} photos has not been computed with this model yet.")
        compute_button(catalogue, record, "Compute the data health")
    elif health.is_stale(catalogue, run_health.model_identity(record)):
        st.warning("The catalogue or the model changed since this was computed; what is shown is the earlier state.")
        compute_button(catalogue, record, "Compute again")
    return health


def compute_button(catalogue: Catalogue, record: RunRecord | None, label: str) -> None:
    actor = person()
    if not actor.may(Permission.EVALUATE):  # the launcher checks it again
        st.caption(f"Computing the data health is for admins; you are a {actor.role}.")
        return
    command = f"python -m training health {catalogue.root}" + (f" --run {record.id}" if record else "")
    if st.button(label, key="health.compute", icon=":material/play_arrow:",
                 help=f"{plain(command)}, in the background: embeddings, neighbours, the map, image quality."):
        launch_health(catalogue, actor, record)
        st.rerun()


@st.fragment(run_every=2)
def follow(catalogue: Catalogue, record: RunRecord | None) -> None:
    job = health_job(catalogue, record)
    if not job.running:
        st.rerun()  # the whole page: the new health is read
    st.info(f"Computing the data health in the background for {time.time() - job.started:.0f} s; you may leave "
            "this page meanwhile.", icon=":material/hourglass_top:")
    st.text(log_tail(job.log, 1))


def review_button(catalogue: Catalogue, ids: list[int], key: str, source: str,
                  label: str = "Review these photos") -> None:
    """Queue the catalogue photos `ids` (`source` says what they are) on the Review page and go there."""
    actor: Actor = person()
    if st.button(f"{label} ({len(ids):,})", key=key, icon=pages.REVIEW.icon,
                 disabled=not ids or not actor.may(Permission.REVIEW),
                 help="Opens them in the Review page's queue: keep, relabel, or mark 'not a product' "
                      "(reviewers and admins)."):
        queue_catalogue(label_store(), catalogue, ids, actor, f"Data health: {source}")
        pages.switch_to(pages.REVIEW)


def grid(catalogue: Catalogue, found: pd.DataFrame, key: str, extra=lambda row: []) -> None:
    """The photos of `found` (an `id` column and any others `extra(row)` describes) with their labels."""
    rows = found.merge(catalogue.frame, on="id", how="left")
    photo_grid(rows, catalogue, lambda row: [*extra(row), labels_text(row)], key=key)


def selected_ids(event) -> tuple[list[int], bool]:
    """The ids a map selection names, and whether they come from a box or lasso (else a click)."""
    selection = event.selection if event else None
    if not selection:
        return [], False
    ids = [int(point["customdata"][0] if isinstance(point["customdata"], list) else point["customdata"])
           for point in selection.points if "customdata" in point]
    return list(dict.fromkeys(ids)), bool(selection.box or selection.lasso)


def map_section(catalogue: Catalogue, health: Health, record: RunRecord | None) -> None:
    left, right = st.columns([2, 1])
    colour_by = left.selectbox("Colour by", colourings(record), key="health.colour")
    head = right.selectbox("Head", list(record.config["heads"]), key="health.outcome_head") if colour_by == OUTCOME \
        else "articleType"
    figure = map_figure(health, catalogue, record, colour_by, head)
    event = st.plotly_chart(figure, key=f"health.map.{colour_by}.{head}", on_select="rerun",
                            selection_mode=("points", "box", "lasso"))
    ids, region = selected_ids(event)
    if not ids:
        st.caption("Click a point to see the photo and its nearest neighbours; to see a region's photos, pick Box "
                   "select or Lasso select in the chart's toolbar, then drag (dragging otherwise zooms; a double "
                   "click zooms out). Photos close on the map look alike to the model.")
    elif region:
        st.markdown(f"**{len(ids):,} photos selected**")
        review_button(catalogue, ids, "health.review_selection", "a selection on the map")
        bulk_label(catalogue, ids, "health.selection")
        grid(catalogue, pd.DataFrame({"id": ids}), "health.selection")
    else:
        photo_and_neighbours(catalogue, health, ids[0])


def photo_and_neighbours(catalogue: Catalogue, health: Health, product_id: int) -> None:
    picture, about = st.columns([1, 3])
    image = thumbnail(str(catalogue.image_path(product_id)), 384)
    if image is not None:
        picture.image(image, width="stretch")
    row = catalogue.frame[catalogue.frame["id"] == product_id].iloc[0]
    about.markdown(f"**Photo {product_id}** and its nearest neighbours")
    about.text(labels_text(row))
    grid(catalogue, health.similar(product_id), f"health.neighbours.{product_id}",
         lambda row: [f"similarity {row['similarity']:.3f}"])


def similar_section(catalogue: Catalogue, health: Health, record: RunRecord | None) -> None:
    left, right = st.columns(2)
    typed = left.text_input("A catalogue photo's id", key="health.similar_id", placeholder=str(health.ids[0]))
    upload = right.file_uploader("…or a photo of your own", type=list(ACCEPTED_EXTENSIONS), key="health.similar_upload")
    if upload is not None:
        try:
            found = similar_to_photo(catalogue, record, upload.getvalue(), upload.name)
        except ImageRejected as error:  # names the file: plain text
            st.error(plain(error))
            return
        st.image(upload.getvalue(), width=192)
        grid(catalogue, found, "health.similar_upload_grid", lambda row: [f"similarity {row['similarity']:.3f}"])
        return
    if not typed.strip():
        st.caption("Type a catalogue id, or upload a photo, to see the most similar catalogue photos.")
        return
    if not typed.strip().isdigit() or int(typed) not in set(health.ids.tolist()):
        st.error("No photo with this id in this data health; type the number under a photo, e.g. from Explore.")
        return
    photo_and_neighbours(catalogue, health, int(typed))


def duplicates_section(catalogue: Catalogue, health: Health, record: RunRecord | None, threshold: float) -> None:
    groups = near_duplicates(health, threshold)
    split, split_name = split_of(catalogue, record)
    leaking = leaking_groups(groups, split)
    columns = st.columns(4)
    columns[0].metric("Exact duplicate groups", f"{len(health.exact_duplicates):,}")
    columns[1].metric("Near-duplicate groups", f"{len(groups):,}", help=f"{sum(map(len, groups)):,} photos")
    columns[2].metric("Groups across train and val", f"{len(leaking):,}", help=f"Leakage, over {split_name}.")
    columns[3].metric("Val photos with a twin in train", f"{len(leaked_ids(groups, split)):,}",
                      help="Their validation score is inflated: the model trained on a near-copy.")
    st.caption(f"Leakage is counted over {split_name}. Train with Split = grouped (Train page, advanced) to keep "
               "each group on one side.")
    which = st.segmented_control("Show", ["leaking groups", "all groups", "exact duplicates"], default="leaking groups",
                                 key="health.groups_shown") or "leaking groups"
    shown = {"leaking groups": leaking, "all groups": groups, "exact duplicates": health.exact_duplicates}[which]
    group_list(catalogue, shown, split, HEADS, f"health.groups.{which}", which,
               near_duplicates_found_by(health, threshold))


def group_list(catalogue: Catalogue, groups: list[list[int]], split: pd.Series, heads, key: str, what: str,
               found_by: dict[tuple[int, ...], str]) -> None:
    """A table of groups (`what` they are, with what found each: embeddings, hashes, same bytes);
    selecting one shows its photos with their split and labels."""
    if not groups:
        st.info("No group here.")
        return
    review_button(catalogue, [i for group in groups for i in group], f"{key}.review", what,
                  "Review every photo of these groups")
    table = group_table(groups, split, catalogue.frame, heads, found_by)
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row", key=f"{key}.table")
    chosen = event.selection.rows if event else []
    if not chosen:
        st.caption("Select a group to see its photos.")
        return
    bulk_label(catalogue, groups[chosen[0]], f"{key}.group")
    members = pd.DataFrame({"id": groups[chosen[0]]})
    members["split"] = split.reindex(members["id"]).fillna("not in the split").to_numpy()
    grid(catalogue, members, f"{key}.photos", lambda row: [row["split"]])


def disagreements_section(catalogue: Catalogue, health: Health, record: RunRecord | None, threshold: float) -> None:
    heads = st.multiselect("Labels compared", HEADS, default=LABELS_DIFFER_DEFAULT, key="health.disagree_heads",
                           help="baseColour is left out by default: one product shot in several colours is a "
                                "near-duplicate group whose colours rightly differ.")
    groups = [entry["ids"] for entry in label_disagreements(near_duplicates(health, threshold), catalogue.frame, heads)]
    st.caption(f"{len(groups):,} near-duplicate groups whose members disagree on at least one of these labels: "
               "one of them is likely mislabelled.")
    group_list(catalogue, groups, split_of(catalogue, record)[0], heads, "health.disagreements",
               "near-duplicates whose labels disagree", near_duplicates_found_by(health, threshold))


def outliers_section(catalogue: Catalogue, health: Health) -> None:
    ids = health.outliers()
    scores = health.outlier_scores()
    st.caption(f"{len(ids):,} photos unlike any other (far from even their nearest neighbours), most isolated first: "
               "often a photo of something that is not a product, or a rare class.")
    review_button(catalogue, ids, "health.review_outliers", "outliers")
    grid(catalogue, pd.DataFrame({"id": ids, "score": scores.reindex(ids).to_numpy()}), "health.outliers",
         lambda row: [f"distance {row['score']:.3f}"])


def image_issues_section(catalogue: Catalogue, health: Health) -> None:
    found = issue_ids(health.issues)
    kind = st.segmented_control("Issue", ISSUE_TYPES, default="blurry", key="health.issue",
                                format_func=lambda name: f"{name.replace('_', ' ')} ({len(found[name]):,})") or "blurry"
    ids = found[kind]
    st.caption("cleanvision's checks, worst first (the score: lower is worse). Mark the ones that are not a product "
               "photo as 'not a product' in Review.")
    review_button(catalogue, ids, f"health.review_issue.{kind}", f"{kind.replace('_', ' ')} photos")
    scores = health.issues.set_index("id")[f"{kind}_score"]
    grid(catalogue, pd.DataFrame({"id": ids, "score": scores.reindex(ids).to_numpy()}), f"health.issue.{kind}",
         lambda row: [f"score {row['score']:.3f}"])


def unreadable_notice(health: Health) -> None:
    """The photos that could not be read: in no finding, so said before them, with each reason."""
    unreadable = health.unreadable
    if not unreadable:
        return
    st.warning(f"{len(unreadable):,} photos could not be read: they have no embedding and are in none of the "
               "findings below.", icon=":material/broken_image:")
    with st.expander("The photos that could not be read, and why"):
        st.dataframe(pd.DataFrame({"id": list(unreadable), "why": list(unreadable.values())}), hide_index=True)


def main() -> None:
    st.title("Data health")
    catalogue = current_catalogue()
    if catalogue is None:
        return
    record = choose_model()
    health = computation(catalogue, record)
    if health is None:
        return
    st.caption(f"{health.info['photos']:,} photos · {health.info['description']} · "
               f"{health.info['index']} similarity search · embeddings by {health.info.get('engine', 'this machine')}")
    unreadable_notice(health)
    threshold = st.slider("Near-duplicate similarity", 0.80, 1.0, DEFAULT_THRESHOLD, 0.005, key="health.threshold",
                          help="Photos at least this similar (cosine of their embeddings) are near-duplicates, and "
                               "so are photos whose perceptual hashes are near (re-encoded copies) at any setting.")
    sections = {
        "Map": partial(map_section, catalogue, health, record),
        "Similar photos": partial(similar_section, catalogue, health, record),
        "Near-duplicates & leakage": partial(duplicates_section, catalogue, health, record, threshold),
        "Label disagreements": partial(disagreements_section, catalogue, health, record, threshold),
        "Outliers": partial(outliers_section, catalogue, health),
        "Image quality": partial(image_issues_section, catalogue, health),
    }
    # Lazy tabs: only the open one runs, so a section's cost is paid when it is looked at.
    for tab, show in zip(st.tabs(list(sections), key="health.section", on_change="rerun"), sections.values()):
        if tab.open:
            with tab:
                show()


main()
