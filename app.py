"""cnnlab's Streamlit entry point: `streamlit run app.py`. Pages live in pages/."""

import streamlit as st

from pages._sidebar import show_sidebar

st.set_page_config(page_title="cnnlab", page_icon=":material/grid_view:", layout="wide")

page = st.navigation([
    st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:",
            default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/inside.py", title="Inside", icon=":material/visibility:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
])
show_sidebar()  # device, data and the shared queue, on every page
page.run()
