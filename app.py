"""cnnlab's Streamlit entry point: `streamlit run app.py`. Pages live in pages/.

This file is read twice. `streamlit run` imports it as a module and finds `app`, an `st.App`
whose start-up hook warms the server (below); each browser session then runs it as a script
(`__name__ == "__main__"`), which lays out the navigation. AppTest runs it as a script too.
"""

import importlib
import threading
from contextlib import asynccontextmanager

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

# What the first page a visitor sees needs: importing torch and the page's modules takes about
# 2.5 s on two cores, which the first visitor after a server start would otherwise wait for.
WARM_MODULES = ("torch", "pandas", "plotly.graph_objects", "cnnlab.analysis.layers",
                "cnnlab.analysis.codegen", "cnnlab.analysis.diagram", "cnnlab.views.cost_tables",
                "cnnlab.views.figures", "cnnlab.runs.jobs", "cnnlab.training.resources")


def warm_up() -> None:
    """Import what the pages use and shape the default network once (lru-cached)."""
    for name in WARM_MODULES:
        importlib.import_module(name)
    from cnnlab.analysis.layers import inspect_spec
    from cnnlab.arch.presets import PRESETS
    from cnnlab.views.editor import DEFAULT_PRESET

    inspect_spec(PRESETS[DEFAULT_PRESET])


@asynccontextmanager
async def lifespan(_app):
    # Pages come from st.navigation below. Streamlit still guesses its legacy multipage mode
    # from the pages/ folder until a script has called st.navigation, so a fresh server whose
    # first visitor opens /train would list every file in pages/ and run that file alone;
    # st.navigation clears the same flag, this clears it before the first visitor.
    PagesManager.uses_pages_directory = False
    # A thread, so the server answers at once; a visitor who comes sooner waits on the import
    # lock for what is left, never for the whole of it twice.
    threading.Thread(target=warm_up, name="cnnlab-warm-up", daemon=True).start()
    yield


if __name__ == "__main__":  # a browser session (or AppTest) runs the script
    from cnnlab.runs.classroom import is_class
    from pages._sidebar import show_sidebar

    st.set_page_config(page_title="cnnlab", page_icon=":material/grid_view:", layout="wide")
    page = st.navigation([
        st.Page("pages/architecture.py", title="Architecture", icon=":material/account_tree:",
                default=True),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/inside.py", title="Inside", icon=":material/visibility:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/lessons.py", title="Lessons", icon=":material/school:"),
    ] + ([st.Page("pages/teacher.py", title="Class", icon=":material/groups:")]
         if is_class() else []))  # a server with a teacher token
    show_sidebar()  # device, data and the shared queue, on every page
    page.run()
else:  # `streamlit run app.py` imports this module and serves `app`
    app = st.App(__file__, lifespan=lifespan)
