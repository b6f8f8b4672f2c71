"""cnnlab's Streamlit entry point: `streamlit run app.py`. Pages live in pages/."""

import streamlit as st

st.set_page_config(page_title="cnnlab", page_icon=":material/grid_view:", layout="wide")

st.navigation([
    st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:",
            default=True),
]).run()
