"""The dashboard's pages in one place: their files, titles and icons, for the navigation and for
every link from one page to another."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st


@dataclass(frozen=True)
class PageInfo:
    path: str  # the page's file, relative to the entry script dashboard/Home.py
    title: str
    icon: str


HOME = PageInfo("../pages/home.py", "Home", ":material/home:")
EXPLORE = PageInfo("../pages/explore.py", "Explore", ":material/query_stats:")
HEALTH = PageInfo("../pages/health.py", "Data health", ":material/health_and_safety:")
TRAIN = PageInfo("../pages/train.py", "Train", ":material/model_training:")
EVALUATE = PageInfo("../pages/evaluate.py", "Evaluate", ":material/analytics:")
REVIEW = PageInfo("../pages/review.py", "Review", ":material/fact_check:")
TEAM = PageInfo("../pages/team.py", "Team", ":material/groups:")
PAGES = (HOME, EXPLORE, HEALTH, TRAIN, EVALUATE, REVIEW, TEAM)  # in the navigation's order


def navigation():
    """The multipage navigation over PAGES (Home first and default); run the page it returns."""
    return st.navigation([st.Page(page.path, title=page.title, icon=page.icon, default=page is HOME) for page in PAGES])


def link(page: PageInfo, label: str) -> None:
    """A link to `page`, with its icon."""
    st.page_link(page.path, label=label, icon=page.icon)


def switch_to(page: PageInfo) -> None:
    st.switch_page(page.path)
