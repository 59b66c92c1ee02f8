"""Team: what a review team did and how well: effort, accuracy on gold items, agreement, and what
the trust layer saved. A lead sees everyone and sets gold items; a reviewer sees their own numbers."""

import streamlit as st

from core.access.roles import Permission
from core.labels.team import decisions, gold_labels
from dashboard.datasets import current_catalogue
from dashboard.identity import person
from dashboard.labels import label_store
from dashboard.team import (
    agreement_section,
    disagreements_section,
    effort_of,
    effort_section,
    gold_controls,
    gold_section,
    message,
    own_rows,
    share_controls,
    totals,
)


def main() -> None:
    st.title("Team")
    actor = person()
    catalogue = current_catalogue()
    if catalogue is None:
        return
    message()
    store = label_store()
    decided = decisions(store, catalogue.root)
    gold = gold_labels(store, catalogue.root)
    totals(store, catalogue, decided)
    lead = actor.may(Permission.LEAD)
    if not lead:
        st.caption("Your own numbers; a lead sees the whole team's.")
    effort_section(effort_of(decided, gold, actor))
    gold_section(own_rows(decided, actor), gold)
    if lead:
        agreement_section(decided)
        disagreements_section(store, catalogue, decided)
        share_controls(store, catalogue, actor)
        gold_controls(store, catalogue, gold, actor)


main()
