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


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_the_app_starts_on_the_architecture_page_with_the_presets(app):
    assert not app.exception
    assert app.title[0].value == "Architecture"
    assert "vgg11" in app.selectbox(key="preset").options


def test_choosing_a_preset_shows_its_textbook_parameter_count(app):
    app.selectbox(key="preset").set_value("resnet18").run()
    assert not app.exception
    assert metric(app, "Parameters") == "11,178,378"
    assert "resnet_block1" in app.get("graphviz_chart")[0].proto.spec
