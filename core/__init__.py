"""Fashion Tagger's domain: catalogue data, labels, images, model. Never imports streamlit."""
