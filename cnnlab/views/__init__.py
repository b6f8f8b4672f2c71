"""How results are shown: pure functions from tables, runs and tensors to figures and page-ready rows (no Streamlit)."""
