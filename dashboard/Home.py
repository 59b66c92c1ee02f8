"""Fashion Tagger's entry point: `streamlit run dashboard/Home.py`.

Builds the navigation over the pages in the top-level `pages/` folder and the dataset picker every
page shares, then runs the chosen page.
"""

import sys
from pathlib import Path

# Streamlit puts this script's folder on sys.path; the packages live one level up.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

from core.database import DatabaseBusy  # noqa: E402
from dashboard.datasets import current_catalogue, dataset_picker  # noqa: E402
from dashboard.pages import navigation  # noqa: E402


def main() -> None:
    st.set_page_config(page_title="Fashion Tagger", page_icon=":material/sell:", layout="wide")
    page = navigation()
    dataset_picker(current_catalogue())
    try:
        page.run()
    except DatabaseBusy as error:  # any page's write: nothing was written, the choices on screen stay
        st.error(f"{error}. Nothing was saved; your choices are kept.", icon=":material/lock_clock:")


main()
