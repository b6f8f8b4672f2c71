"""How results are shown: pure functions from tables, runs and tensors to figures, page-ready
rows and text (no Streamlit)."""
