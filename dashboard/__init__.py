"""Streamlit UI helpers shared by the pages: cached loaders and the dataset picker."""
