"""The Streamlit app, run headless through AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest


@pytest.fixture
def app():
    st.cache_resource.clear()  # shared between AppTest instances (streamlit issue #9139)
    st.cache_data.clear()
    app_py = Path(__file__).parent.parent / "app.py"
    return AppTest.from_file(str(app_py), default_timeout=60).run()


def test_the_app_starts_on_the_architecture_page(app):
    assert not app.exception
    assert app.title[0].value == "Architecture"
