"""Evaluate: one finished run per head and per class, where it confuses classes, and against another run."""

from functools import partial

import pandas as pd
import streamlit as st

from core.data import CatalogueError
from core.evaluation.files import Evaluation, exclusion_notes, head_summary, summary_table
from core.evaluation.views import (
    CLASS_OUTCOMES,
    SIGNIFICANCE,
    Change,
    cell_rows,
    class_rows,
    class_table,
    classes_csv,
    compare_classes,
    compare_shared,
    compare_summaries,
    filter_classes,
    label_lines,
    misclassified,
    report_json,
    summary_csv,
    top_n_confusion,
    top_probabilities,
    trust_sentences,
    trust_table,
)
from core.trust.abstention import TARGET_ERROR
from core.trust.layer import TARGETS
from dashboard import charts, pages
from dashboard.datasets import open_catalogue
from dashboard.evaluations import (
    Basis,
    comparison,
    dataset_of,
    evaluated_runs,
    evaluation_label,
    evaluation_of,
    label_issues_of,
)
from dashboard.gallery import photo_grid
from dashboard.identity import person
from dashboard.runs import EVALUATE_RUN_KEY, training_curves
from dashboard.source_trust import source_section
from dashboard.text import code, plain
from training.crossval import list_crossvals
from training.registry import RunRecord, RunState
from training.run_folder import VALIDATION, RunFolder
from training.status import metrics_frame

DEFAULT_TOP_N = 20
NUMBER = st.column_config.NumberColumn(format="%.3f")
DELTA = st.column_config.NumberColumn(format="%+.3f")
COUNT = "{:,.0f}"  # a Styler format: a row count
SIGNIFICANCE_LEVELS = (0.01, 0.05, 0.1)  # the levels a comparison may flag changes at


def choose_evaluation(runs: dict[str, RunRecord]) -> tuple[RunRecord, Evaluation, str]:
    """The run, its evaluation and the head the page shows; returns (record, evaluation, head)."""
    left, middle = st.columns([3, 2])
    run_id = left.selectbox("Run", list(runs), key=EVALUATE_RUN_KEY,
                            format_func=lambda i: f"{i} · {runs[i].status} · {runs[i].config.get('backbone')}")
    record = runs[run_id]
    names = RunFolder(record.folder).evaluation_names()
    name = middle.selectbox("Evaluated on", names, key=f"evaluate.name.{run_id}", format_func=evaluation_label,
                            help="validation split: the rows that chose the run's best epoch and fitted its "
                                 "calibration; test part: the dataset's fixed test part, rows no run of the dataset "
                                 "trains or validates on; otherwise every row of the catalogue named.")
    evaluation = evaluation_of(record, name)
    heads = evaluation.heads
    head = st.segmented_control("Head", heads, default="articleType" if "articleType" in heads else heads[0],
                                key="evaluate.head") or heads[0]
    return record, evaluation, head


def summary(record: RunRecord, evaluation: Evaluation) -> None:
    report = evaluation.report
    st.caption(f"Checkpoint {code(report['checkpoint'])} · {report['rows']:,} images · "
               f"dataset {code(dataset_of(record, evaluation))}")
    st.dataframe(summary_table(head_summary(report)),
                 column_config={metric: NUMBER for metric in ("accuracy", "macro_f1", "weighted_f1")})
    for note in exclusion_notes(report):  # names classes: plain text
        st.caption(plain(note))
    columns = st.columns(3)
    stem = f"{record.id}-{evaluation.name}"
    columns[0].download_button("Summary (CSV)", partial(summary_csv, report), f"{stem}-summary.csv", "text/csv",
                               on_click="ignore", icon=":material/download:")
    columns[1].download_button("Class-wise report (CSV)", partial(classes_csv, report), f"{stem}-classes.csv",
                               "text/csv", on_click="ignore", icon=":material/download:")
    columns[2].download_button("Report (JSON)", partial(report_json, report), f"{stem}-report.json",
                               "application/json", on_click="ignore", icon=":material/download:")


def classes(record: RunRecord, evaluation: Evaluation, head: str) -> None:
    table = class_table(evaluation.report, head)
    left, right = st.columns([2, 1])
    contains = left.text_input("Class name contains", key="evaluate.class_filter")
    min_support = right.number_input("Support at least", 0, int(table["support"].max()), 0, key="evaluate.min_support")
    shown = filter_classes(table, contains, min_support)
    st.caption(f"{len(shown)} of {len(table)} classes. Click a column header to sort; select a row to see its images.")
    event = st.dataframe(shown, hide_index=True, column_config={"precision": NUMBER, "recall": NUMBER, "f1": NUMBER},
                         on_select="rerun", selection_mode="single-row", key=f"evaluate.class_table.{head}")
    if shown.empty:
        return
    selected = event.selection.rows if event else []
    if selected:
        class_images(record, evaluation, head, shown["class"].iloc[selected[0]])
    st.plotly_chart(charts.class_f1_bars(shown, head), key="evaluate.f1_bars")


def class_images(record: RunRecord, evaluation: Evaluation, head: str, class_name: str) -> None:
    """The images behind one class's recall and precision: missed, wrongly given, right."""
    rows = {outcome: class_rows(evaluation.predictions, head, class_name, outcome) for outcome in CLASS_OUTCOMES}
    first_shown = next((index for index, name in enumerate(CLASS_OUTCOMES) if len(rows[name])), 0)
    outcome = st.radio(f"Images of {plain(class_name)}", CLASS_OUTCOMES, index=first_shown, horizontal=True,
                       key=f"evaluate.outcome.{head}.{class_name}",
                       format_func=lambda name: f"{name} ({len(rows[name]):,})",
                       help="missed: true class, predicted another (recall's losses) · wrongly given: predicted, "
                            "true another (precision's losses) · right: both")
    gallery(dataset_of(record, evaluation), rows[outcome], lambda row: label_lines(row, evaluation.heads),
            key=f"class.{head}.{class_name}.{outcome}")


def confusion(record: RunRecord, evaluation: Evaluation, head: str) -> None:
    names = evaluation.classes(head)
    left, right = st.columns(2)
    normalised = left.radio("Cells show", ["counts", "row-normalised"], horizontal=True,
                            key="evaluate.norm") != "counts"
    top_n = right.slider("Classes shown (by support; the rest grouped)", 1, len(names), min(DEFAULT_TOP_N, len(names)),
                         key=f"evaluate.top_n.{head}")
    view = top_n_confusion(names, evaluation.matrix(head), top_n)
    title = f"{head}: {'share of each true class' if normalised else 'rows'}"
    event = st.plotly_chart(charts.confusion_heatmap(view, normalised, title), key=f"evaluate.heatmap.{head}.{top_n}",
                            on_select="rerun", selection_mode=("points",))
    if view.grouped:
        st.caption(plain(f"{view.classes[-1]} groups {len(view.grouped)} classes: {', '.join(view.grouped)}."))
    st.download_button("Confusion matrix (PNG)", partial(charts.confusion_png, view, normalised, title),
                       f"{record.id}-{evaluation.name}-{head}-confusion.png", "image/png", on_click="ignore",
                       icon=":material/download:")
    true_key, predicted_key = f"evaluate.true.{head}.{top_n}", f"evaluate.pred.{head}.{top_n}"
    points = event.selection.points if event else []
    if points:
        clicked = charts.clicked_cell(points[0])
        if st.session_state.get("evaluate.clicked") != clicked:  # a new click, not the chart's standing selection
            st.session_state["evaluate.clicked"] = clicked
            st.session_state[true_key], st.session_state[predicted_key] = clicked
    left, right = st.columns(2)
    true_class = left.selectbox("True class", view.classes, index=None, key=true_key,
                                placeholder="click a cell or choose")
    predicted_class = right.selectbox("Predicted class", view.classes, index=None, key=predicted_key,
                                      placeholder="click a cell or choose")
    if true_class is None or predicted_class is None:
        st.caption("Click a cell, or choose a true and a predicted class, to see its images.")
        return
    rows = cell_rows(evaluation.predictions, head, view, true_class, predicted_class)
    st.markdown(f"**{len(rows):,} images** true {plain(true_class)}, predicted {plain(predicted_class)}")

    def probabilities(row: pd.Series) -> list[str]:
        return [f"{name} {p:.2f}" for name, p in top_probabilities(row, head, names)]

    gallery(dataset_of(record, evaluation), rows, probabilities, key=f"cell.{head}")


def misclassified_section(record: RunRecord, evaluation: Evaluation, head: str) -> None:
    order = st.radio("Order", ["most confident first", "least confident first"], horizontal=True, key="evaluate.order")
    rows = misclassified(evaluation.predictions, head, order == "most confident first")
    st.caption(f"{len(rows):,} of {evaluation.report['heads'][head]['support']:,} scored images are wrong on {head}; "
               "under each image: predicted (probability) and, where wrong, the true class, for every head.")
    gallery(dataset_of(record, evaluation), rows, lambda row: label_lines(row, evaluation.heads), key=f"wrong.{head}")


def gallery(data: str, rows: pd.DataFrame, lines, key: str) -> None:
    """Photos of `rows` from catalogue `data`, with `lines(row)` under each."""
    try:
        catalogue = open_catalogue(data)
    except CatalogueError as error:
        st.warning(f"The photos of {code(data)} cannot be shown: {plain(error)}")
        catalogue = None
    photo_grid(rows, catalogue, lines, key=f"evaluate.{key}")


def label_issues(record: RunRecord, evaluation: Evaluation, head: str) -> None:
    sources = {"this run's validation split": (record.folder, dataset_of(record, evaluation))}
    sources |= {f"cross-validation {c.id} · every row ({c.rows:,})": (c.folder, c.config["data"])
                for c in list_crossvals() if c.status == RunState.FINISHED}
    left, right = st.columns([3, 1])
    choice = left.selectbox("Out-of-sample probabilities from", list(sources), key="evaluate.issues_source",
                            help="python -m training crossval --data DIR --folds K scores every catalogue row.")
    only_flagged = right.toggle("Only rows cleanlab flags", value=True, key="evaluate.issues_flagged")
    folder, data = sources[choice]
    issues = label_issues_of(folder)
    rows = issues[issues["head"] == head]
    st.caption(f"{len(rows):,} labelled {head} rows ranked, most likely wrong first; cleanlab flags "
               f"{int(rows['is_issue'].sum()):,} of them. Score: label quality in [0, 1], lower = more suspicious.")
    pages.link(pages.REVIEW, "Review and correct them one by one (Review → Catalogue: label issues)")
    gallery(data, rows[rows["is_issue"]] if only_flagged else rows,
            lambda row: [f"given {row['given']} ({row['given_p']:.2f})",
                         f"suggested {row['suggested']} ({row['suggested_p']:.2f})",
                         f"score {row['score']:.3f} · rank {row['rank']:,}"],
            key=f"issues.{head}.{only_flagged}")


def trust(record: RunRecord, evaluation: Evaluation, head: str) -> None:
    report = evaluation.report
    if "trust" not in report:
        st.info("This evaluation was written without a trust layer (taxonomy, calibration, thresholds). For a run "
                "trained before it existed: `python -m training calibrate RUN_ID`, then evaluate again.")
        return
    rows = report["trust"]["rows"]
    target = st.segmented_control("Error rate allowed among accepted tags", TARGETS, default=TARGET_ERROR,
                                  key="evaluate.target", format_func=lambda e: f"≤ {e:.0%}") or TARGET_ERROR
    for sentence in trust_sentences(report, target):
        st.markdown(f"- {plain(sentence)}")
    impossible = report["impossible"]
    st.caption(f"Impossible combinations (an articleType under another subCategory, ...): "
               f"{impossible['independent']:.1%} when each head is decoded on its own, "
               f"{impossible['consistent']:.1%} decoded jointly (the proposals). Calibration numbers from "
               f"{rows['ece']:,} rows, error at a target from {rows['targets']:,} rows"
               + (" (on the validation split: each from the half that did not fit it)."
                  if evaluation.name == VALIDATION else "."))
    st.dataframe(trust_table(report, target), column_config={
        **{column: NUMBER for column in ("accuracy", "accuracy_independent", "macro_f1", "macro_f1_independent",
                                         "ece_before", "ece_after")},
        "temperature": st.column_config.NumberColumn(format="%.2f"),
        "threshold": st.column_config.NumberColumn("threshold (p ≥)", format="%.4f"),
        "coverage": st.column_config.NumberColumn("accepted share", format="percent"),
        "error": st.column_config.NumberColumn("realised error", format="percent"),
        "accepted": st.column_config.NumberColumn(format="%d"),
    })
    entry = report["trust"]["heads"][head]
    left, right = st.columns(2)
    left.plotly_chart(charts.reliability_diagram(entry["reliability_before"], entry["reliability_after"], head),
                      key=f"evaluate.reliability.{head}")
    right.plotly_chart(charts.risk_coverage(entry["risk_coverage"], target, entry["targets"][str(target)]["threshold"],
                                            head), key=f"evaluate.risk.{head}.{target}")
    source_section(record, dataset_of(record, evaluation), target, person())


def curves(record: RunRecord) -> None:
    epochs = metrics_frame(record.folder)
    if epochs.empty:
        st.info("This run logged no epochs (metrics.csv is missing or empty).")
        return
    training_curves(epochs, tuple(record.config["heads"]), key="evaluate")


def change_colour(change: str) -> str:
    return {Change.WORSE: "color: #C62828; font-weight: 600", Change.BETTER: "color: #2E7D32"}.get(change, "")


def compare(runs: dict[str, RunRecord], record: RunRecord, evaluation: Evaluation, head: str) -> None:
    """Two runs like for like: on their dataset's fixed test part when both have it, else on the rows
    both evaluations scored; a change flagged only where McNemar's test on those rows makes it significant."""
    others = [run_id for run_id in runs if run_id != record.id]
    if not others:
        st.info("Only one evaluated run so far: train or evaluate another run to compare.")
        return
    left, right = st.columns([3, 1])
    chosen = left.selectbox("Compare with run (b)", others, key="evaluate.compare_with",
                            format_func=lambda i: f"{i} · {runs[i].config.get('backbone')}")
    alpha = right.selectbox("Flag a change at", SIGNIFICANCE_LEVELS, index=SIGNIFICANCE_LEVELS.index(SIGNIFICANCE),
                            key="evaluate.significance", format_func=lambda level: f"p < {level:g}",
                            help="McNemar's exact test on the rows both evaluations scored: a change is flagged "
                                 "only when the rows one got right and the other wrong make it unlikely by chance.")
    pair = comparison(record, evaluation.name, runs[chosen])
    if pair is None:
        st.warning(f"Run {plain(chosen)} has no evaluation of {code(dataset_of(record, evaluation))}, which run a's "
                   f"{plain(evaluation_label(evaluation.name))} scored: evaluate it there (Review → Predict all rows, "
                   f"or {code(f'python -m training evaluate {chosen} --data DIR')}), or choose another evaluation "
                   "above.")
        return
    mine, other = evaluation_of(record, pair.a), evaluation_of(runs[chosen], pair.b)
    st.caption(plain(f"a = run {record.id} · {evaluation_label(pair.a)}; b = run {chosen} · "
                     f"{evaluation_label(pair.b)}; delta = b − a"))
    heads = compare_shared(mine.predictions, other.predictions, [name for name in mine.heads if name in other.heads],
                           alpha)
    shared = int(heads["rows"].max()) if len(heads) else 0
    scored = f"(a scored {len(mine.predictions):,}, b {len(other.predictions):,}); a head's rows are those with " \
             "the same true class in both"
    if pair.basis == Basis.TEST_PART:
        st.markdown(f"Both scored on **the dataset's fixed test part, {shared:,} rows** neither run trained or "
                    f"validated on {scored}.")
    else:
        st.markdown(f"Like for like on the **{shared:,} rows both scored** {scored}. Not on the dataset's fixed test "
                    f"part: {plain(pair.why)}.")
    if not shared:
        st.warning("The two evaluations share no row: they cannot be compared like for like. Evaluate both "
                   "runs on the same catalogue (Review → Predict all rows, or python -m training evaluate).")
        return
    counts = ["rows", "only_a_right", "only_b_right"]
    st.dataframe(heads.style.map(change_colour, subset=["change"]).format(COUNT, subset=counts), column_config={
        "accuracy_a": NUMBER, "accuracy_b": NUMBER, "delta": DELTA, "p_value": st.column_config.NumberColumn(
            format="%.3g")})
    with st.expander("Each evaluation on all its own rows (not like for like)"):
        summaries = compare_summaries(mine.report, other.report)
        supports = ["support_a", "support_b"]
        st.dataframe(summaries.style.format("{:+.3f}", subset=[c for c in summaries.columns if c.endswith("_delta")])
                     .format("{:.3f}", subset=[c for c in summaries.columns if c.endswith(("_a", "_b"))
                                               and c not in supports]).format(COUNT, subset=supports))
    if head not in other.heads:
        st.info(f"Run b has no {head} head.")
        return
    table = compare_classes(mine.predictions, other.predictions, head, alpha)
    worse, better = int((table["change"] == Change.WORSE).sum()), int((table["change"] == Change.BETTER).sum())
    st.markdown(f"**{head}**: accuracy on each true class's shared rows; {worse} classes significantly worse, "
                f"{better} better (p < {alpha:g}); a class with few rows is never flagged on its own.")
    st.dataframe(table.style.map(change_colour, subset=["change"]).format(COUNT, subset=counts), hide_index=True,
                 column_config={"accuracy_a": NUMBER, "accuracy_b": NUMBER, "delta": DELTA,
                                "p_value": st.column_config.NumberColumn(format="%.3g")})


def main() -> None:
    st.title("Evaluate")
    runs = evaluated_runs()
    if not runs:
        st.info("No evaluated run yet: a run is evaluated on its validation split when training finishes.")
        pages.link(pages.TRAIN, "Train a model")
        return
    record, evaluation, head = choose_evaluation(runs)
    sections = {
        "Summary": partial(summary, record, evaluation),
        "Classes": partial(classes, record, evaluation, head),
        "Confusion": partial(confusion, record, evaluation, head),
        "Misclassified": partial(misclassified_section, record, evaluation, head),
        "Trust": partial(trust, record, evaluation, head),
        "Label issues": partial(label_issues, record, evaluation, head),
        "Curves": partial(curves, record),
        "Compare": partial(compare, runs, record, evaluation, head),
    }
    # Lazy tabs: only the open one runs, so a section's cost is paid when it is looked at.
    for tab, show in zip(st.tabs(list(sections), key="evaluate.section", on_change="rerun"), sections.values()):
        if tab.open:
            with tab:
                show()


main()
