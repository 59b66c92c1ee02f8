"""The Team page's parts (core.labels.team): what the trust layer saved, each reviewer's effort and
accuracy, agreement between reviewers, and the disagreements a lead settles; gold items a lead sets."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from core.access.roles import Actor, Permission
from core.data.catalogue import Catalogue
from core.labels.leases import TeamSettings, set_team_settings, team_settings
from core.labels.store import LabelStore
from core.labels.team import add_gold_rows, agreement, disagreements, effort, gold_accuracy, team_totals
from core.untrusted import spreadsheet_csv
from dashboard import pages
from dashboard.queue_state import start_queue
from dashboard.text import chart_text

TEAM_MESSAGE_KEY = "team.message"  # what the last lead action did, shown once after its rerun
PERCENT = st.column_config.NumberColumn(format="percent")


def totals(store: LabelStore, catalogue: Catalogue, decided: pd.DataFrame) -> None:
    numbers = team_totals(store, catalogue.root, decided)
    columns = st.columns(4)
    columns[0].metric("Tags accepted with no person", f"{numbers['auto_accepted']:,}",
                      help="Certified by the trust layer, not undone (Evaluate → Trust).")
    columns[1].metric("Tags decided by people", f"{numbers['people']:,}")
    pace = numbers["seconds_per_tag"]
    columns[2].metric("Seconds per tag (the team's pace)", "—" if pace is None else f"{pace:.1f}",
                      help="Measured on the server, from an item shown to its decision, over its heads decided.")
    saved = numbers["hours_saved"]
    columns[3].metric("Reviewer-hours saved", "—" if saved is None else f"{saved:,.1f}",
                      help="The tags accepted with no person, at the team's own pace.")


def effort_section(table: pd.DataFrame) -> None:
    st.subheader("Effort per reviewer and day")
    if table.empty:
        st.caption("No decision yet.")
        return
    st.dataframe(table, hide_index=True, column_config={
        "seconds_per_decision": st.column_config.NumberColumn("seconds per photo (median)", format="%.1f"),
        "kept": PERCENT, "changed": PERCENT, "typed": PERCENT, "gold_accuracy": PERCENT, "agreement": PERCENT,
        "shared_decisions": st.column_config.NumberColumn("decided by another too", format="%d"),
    })
    st.download_button("Effort (CSV)", spreadsheet_csv(table, index=False), "team-effort.csv", "text/csv",
                       key="team.effort_csv", icon=":material/download:")
    shown = table.assign(reviewer=table["reviewer"].map(chart_text))
    left, right = st.columns(2)
    left.plotly_chart(px.bar(shown, x="day", y="decisions", color="reviewer", barmode="group",
                             title="Photos decided per day"), key="team.decisions_chart")
    right.plotly_chart(px.line(shown.dropna(subset=["seconds_per_decision"]), x="day", y="seconds_per_decision",
                               color="reviewer", markers=True, title="Seconds per photo (median)"),
                       key="team.seconds_chart")


def gold_section(decided: pd.DataFrame, gold: dict) -> None:
    st.subheader("Accuracy on gold items")
    if not gold:
        st.caption("No gold item yet: a lead sets them below.")
        return
    table = gold_accuracy(decided, gold)
    if table.empty:
        st.caption(f"{len(gold):,} gold items; nobody has decided one yet.")
        return
    st.dataframe(table, hide_index=True, column_config={"accuracy": PERCENT, "accuracy_low": PERCENT,
                                                        "accuracy_high": PERCENT})


def agreement_section(decided: pd.DataFrame) -> None:
    st.subheader("Agreement")
    pairs, alphas = agreement(decided)
    if pairs.empty:
        st.caption("No item has been decided by two reviewers yet.")
        return
    st.caption("Cohen's kappa per pair of reviewers and head (on the items both decided; none under 5), "
               "Krippendorff's alpha per head over everyone: 1 agrees always, 0 as by chance.")
    st.dataframe(pd.DataFrame({"head": list(alphas), "krippendorff_alpha": list(alphas.values())}), hide_index=True)
    st.dataframe(pairs, hide_index=True, column_config={"agree": PERCENT,
                                                        "kappa": st.column_config.NumberColumn(format="%.3f")})


def disagreements_section(store: LabelStore, catalogue: Catalogue, decided: pd.DataFrame) -> None:
    open_ = disagreements(decided)
    if open_.empty:
        return
    items = open_["item"].drop_duplicates().tolist()
    st.warning(f"{len(open_):,} head decisions on {len(items):,} photos were decided differently by two reviewers "
               "and wait for a third person: the catalogue takes what they decide.", icon=":material/balance:")
    if st.button("Settle them in the Review queue", key="team.settle", icon=":material/fact_check:"):
        start_queue(catalogue, store.items(items), f"the {len(items):,} photos two reviewers disagree on")
        pages.switch_to(pages.REVIEW)


def share_controls(store: LabelStore, catalogue: Catalogue, actor: Actor) -> None:
    """A lead sets the shares of gold items mixed into new queues and of items two people review."""
    settings = team_settings(store, catalogue.root)
    with st.form("team.share_form", border=False):
        left, middle, right = st.columns([1, 1, 2], vertical_alignment="bottom")
        gold = left.number_input("Gold items per queue item (%)", 0.0, 50.0, settings.gold_share * 100, 1.0,
                                 key="team.gold_share")
        double = middle.number_input("Reviewed twice (%)", 0.0, 100.0, settings.double_share * 100, 1.0,
                                     key="team.double_share")
        save = right.form_submit_button("Set the shares", icon=":material/tune:")
    if save:
        set_team_settings(store, catalogue.root, TeamSettings(gold / 100, double / 100), actor)
        st.session_state[TEAM_MESSAGE_KEY] = (f"New queues mix in {gold:.0f} % gold items; {double:.0f} % of items "
                                              "are reviewed by two people.")
        st.rerun()
    st.caption("In team mode a queue is shared: each photo shown is held for its reviewer for 5 minutes, so two "
               "people never see the same one, but for the share reviewed twice, which goes to two different "
               "people; gold items look like any other catalogue row.")


def gold_controls(store: LabelStore, catalogue: Catalogue, gold: dict, actor: Actor) -> None:
    """A lead draws gold items from the catalogue: its rows' labels, as corrected, are trusted."""
    with st.form("team.gold_form", border=False):
        left, right = st.columns([1, 2], vertical_alignment="bottom")
        count = left.number_input("Gold items to add", 1, 1000, 20, key="team.gold_count")
        add = right.form_submit_button("Add gold items from the catalogue", icon=":material/workspace_premium:")
    if add:
        added = add_gold_rows(store, catalogue, count, actor)
        st.session_state[TEAM_MESSAGE_KEY] = (f"{added:,} catalogue rows are gold items now "
                                              f"({len(gold) + added:,} in all).")
        st.rerun()


def own_rows(table: pd.DataFrame, actor: Actor) -> pd.DataFrame:
    """What a person sees: everyone's rows for a lead, else their own."""
    return table if actor.may(Permission.LEAD) else table[table["reviewer"] == actor.identity]


def effort_of(decided: pd.DataFrame, gold: dict, actor: Actor) -> pd.DataFrame:
    return own_rows(effort(decided, gold), actor)


def message() -> None:
    text = st.session_state.pop(TEAM_MESSAGE_KEY, None)
    if text:
        st.success(text, icon=":material/done:")
