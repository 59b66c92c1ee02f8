"""The Trust view per source (core.labels.sources): for the photos each source brought, which heads
are accepted with no person and under what rule, how many more reviewed photos would certify the
others, what the audits found with its interval, and whether the alarm stopped a head; for an
admin, the audit share, recalibration, and undoing an auto-acceptance as a whole."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.access.roles import Actor, Permission
from core.labels.sources import (
    auto_accept_batches,
    calibrate_source,
    set_audit_share,
    source_table,
)
from core.labels.store import LabelStore
from core.trust.layer import Calibration
from core.trust.sources import AUDIT_SHARE, NEW_SOURCE_AUDIT_SHARE
from dashboard.labels import label_store
from dashboard.text import plain
from training.registry import RunRecord
from training.run_folder import RunFolder

SOURCE_MESSAGE_KEY = "trust.source_message"  # what the last admin action here did, shown once after its rerun
SOURCE_KEY, SHARE_KEY = "trust.source", "trust.audit_share"  # the admin's chosen source and its audit share box
PERCENT = st.column_config.NumberColumn(format="percent")


@st.cache_data(show_spinner=False, max_entries=8)
def _calibration(path: str, stamp: int) -> Calibration:
    return Calibration.load(path)


def run_calibration(record: RunRecord) -> Calibration | None:
    """The run's calibration (calibration.json), None before it has one."""
    path = RunFolder(record.folder).calibration
    return _calibration(str(path), path.stat().st_mtime_ns) if path.is_file() else None


def source_section(record: RunRecord, dataset: str, target: float, actor: Actor) -> None:
    """Per source and head of `dataset`: the rule, the audits and the alarm, at `target` error."""
    st.subheader("Per source")
    message = st.session_state.pop(SOURCE_MESSAGE_KEY, None)
    if message:
        st.success(message, icon=":material/done:")
    store = label_store()
    calibration = run_calibration(record)
    table = source_table(store, dataset, record.id, calibration, target)
    if table.empty:
        st.caption("No photo has come from any source yet: upload photos or load a folder on the Review page.")
        return
    st.caption(f"A person decides every photo of a source until its own reviewed photos certify its heads (an "
               f"admin recalibrates it here, or `python -m training calibrate {record.id} --source NAME`); what the "
               f"run's thresholds would have accepted meanwhile is audited, to show how they would have done. After "
               f"that, {AUDIT_SHARE:.0%} of the accepted photos go to a person unannounced. An admin may lower an "
               f"uncertified source's audit share from {NEW_SOURCE_AUDIT_SHARE:.0%}: the run's thresholds then "
               f"accept its photos that are like the run's validation photos. When the audits show the error "
               f"above the target (a test that raises a false alarm at most 5 % of the time), the head stops for "
               f"that source.")
    for row in table[table["alarm"].str.startswith("fired")].itertuples():
        st.warning(plain(f"{row.head} of the photos from {row.source}: {row.rule}."),
                   icon=":material/notifications_active:")
    st.dataframe(table, hide_index=True, column_config={
        "rule": st.column_config.TextColumn("rule in force", width="large"),
        "threshold": st.column_config.NumberColumn("threshold (p ≥)", format="%.4f"),
        "decisions": st.column_config.NumberColumn("reviewed decisions", format="%d"),
        "more_needed": st.column_config.NumberColumn("more reviewed photos to certify", format="%d",
                                                     help="0: a recalibration certifies it now; empty: the "
                                                          "decisions so far are too often wrong for any number"),
        "audit_share": PERCENT, "error": PERCENT, "error_low": PERCENT, "error_high": PERCENT,
    })
    if actor.may(Permission.CALIBRATE):
        admin_controls(store, dataset, record, calibration, table, actor)
    batches(store, dataset, actor)


def _show_share_in_force(shares: dict[str, float]) -> None:
    """The audit share box shows the chosen source's share in force, so that saving without an edit
    changes nothing (a fixed default would quietly lower an uncertified source's 100 %)."""
    source = st.session_state.get(SOURCE_KEY)
    if source in shares:
        st.session_state[SHARE_KEY] = shares[source] * 100


def admin_controls(store: LabelStore, dataset: str, record: RunRecord, calibration: Calibration | None,
                   table: pd.DataFrame, actor: Actor) -> None:
    shares = table.groupby("source", sort=False)["audit_share"].first().to_dict()
    # Outside the form: choosing a source reruns the page, which shows that source's share in force.
    source = st.columns([1, 2])[0].selectbox("Source", list(shares), key=SOURCE_KEY, on_change=_show_share_in_force,
                                             args=(shares,))
    if SHARE_KEY not in st.session_state:
        st.session_state[SHARE_KEY] = shares[source] * 100
    with st.form("trust.source_form", border=False):
        left, right = st.columns([1, 2], vertical_alignment="bottom")
        share = left.number_input("Audit share (%)", 0.0, 100.0, step=1.0, key=SHARE_KEY)
        save = right.form_submit_button("Set the audit share", icon=":material/percent:")
        recalibrate = right.form_submit_button("Recalibrate from its reviewed photos", icon=":material/verified:",
                                               disabled=calibration is None)
    if save:
        set_audit_share(store, dataset, source, share / 100, actor)
        st.session_state[SOURCE_MESSAGE_KEY] = plain(f"Audit share of {source} set to {share:.0f} %.")
        st.rerun()
    if recalibrate:
        st.session_state.pop(SHARE_KEY)  # certified, its share in force changes: shown again on the rerun
        certified = calibrate_source(store, dataset, source, record.id, calibration.selections, actor)
        rows = max((selection.rows for selection in certified.selections.values()), default=0)
        st.session_state[SOURCE_MESSAGE_KEY] = plain(f"{source} recalibrated on {rows:,} reviewed photos: its heads "
                                                      "now follow its own certification, and its alarms start again.")
        st.rerun()


def batches(store: LabelStore, dataset: str, actor: Actor) -> None:
    """The latest auto-acceptances, each undone as a whole."""
    recent = auto_accept_batches(store, dataset)
    if recent.empty:
        return
    with st.expander(f"Auto-accepted tags: the latest {len(recent):,} acceptances", icon=":material/history:"):
        st.dataframe(recent.drop(columns="batch"), hide_index=True)
        open_batches = recent[recent["undone"] < recent["heads"]]
        if open_batches.empty:
            return
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        batch = left.selectbox("Acceptance", open_batches["batch"].tolist(), key="trust.batch",
                               format_func=lambda b: "{at} · {reviewer} · {photos} photos · run {run_id}".format(
                                   **open_batches.set_index("batch").loc[b].to_dict()))
        if right.button("Undo it", key="trust.undo_batch", icon=":material/undo:",
                        disabled=not (actor.may(Permission.UNDO_ANY)
                                      or open_batches.set_index("batch").loc[batch, "reviewer"] == actor.identity)):
            undone, kept = store.undo_batch(batch, actor)
            st.session_state[SOURCE_MESSAGE_KEY] = (
                f"Undid {len(undone):,} photos' accepted tags" + (f"; {len(kept):,} decided by a person since keep "
                                                                  "that decision." if kept else "."))
            st.rerun()
