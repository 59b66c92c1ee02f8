"""Home: the open dataset, its cleaning report, and where to go next."""

import streamlit as st

from dashboard.datasets import current_catalogue


def cleaning_report(report) -> None:
    columns = st.columns(5)
    columns[0].metric("Lines read", f"{report.lines_read:,}")
    columns[1].metric("Lines repaired", f"{report.lines_repaired:,}", help="Extra commas in the product name, rejoined")
    columns[2].metric("Duplicate ids", f"{report.duplicate_ids:,}", help="Later rows with an id seen before; the first is kept")
    columns[3].metric("Rows without image", f"{report.rows_without_image:,}", help="Dropped: images/<id>.jpg is absent")
    columns[4].metric("Products kept", f"{report.rows_kept:,}")


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
    st.page_link("../pages/explore.py", label="Explore the catalogue", icon=":material/query_stats:")


main()
