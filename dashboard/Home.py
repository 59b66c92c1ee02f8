"""Fashion Tagger's entry point: `streamlit run dashboard/Home.py`.

Signs the person in (team mode: the login screen first; dashboard.identity), builds the navigation
over the pages in the top-level `pages/` folder, who is acting and the dataset picker every page
shares, then runs the chosen page.
"""

import sys
from pathlib import Path

# Streamlit puts this script's folder on sys.path; the packages live one level up.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import streamlit as st  # noqa: E402

from core.access.database import DatabaseBusy  # noqa: E402
from core.access.roles import AccessDenied  # noqa: E402
from dashboard.datasets import current_catalogue, dataset_picker  # noqa: E402
from dashboard.identity import identity_sidebar, sign_in  # noqa: E402
from dashboard.pages import navigation  # noqa: E402
from dashboard.text import plain  # noqa: E402


def main() -> None:
    st.set_page_config(page_title="Fashion Tagger", page_icon=":material/sell:", layout="wide")
    actor = sign_in()
    if actor is None:
        return
    page = navigation()
    identity_sidebar(actor)
    dataset_picker(actor, current_catalogue())
    try:
        page.run()
    except DatabaseBusy as error:  # any page's write: nothing was written, the choices on screen stay
        st.error(f"{error}. Nothing was saved; your choices are kept.", icon=":material/lock_clock:")
    except AccessDenied as error:  # a write the person's role does not allow: core refused it, nothing written
        st.error(f"{plain(error)}. Nothing was done.", icon=":material/block:")


main()
