"""The Streamlit app, run headless through AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_RUNS", str(tmp_path / "runs"))  # not ./runs in the checkout
    st.cache_resource.clear()  # shared between AppTest instances (streamlit issue #9139)
    st.cache_data.clear()
    app_py = Path(__file__).parent.parent / "app.py"
    return AppTest.from_file(str(app_py), default_timeout=60).run()


def test_the_app_starts_on_the_architecture_page(app):
    assert not app.exception
    assert app.title[0].value == "Architecture"


def test_streamlit_run_serves_an_st_app_that_warms_the_server_at_start():
    """`streamlit run app.py` finds `app` (an st.App) and serves it; its start-up hook imports
    what the first page needs and shapes the default network, so the first visitor does not."""
    import asyncio
    import importlib.util
    import sys

    from streamlit.web.server.app_discovery import discover_asgi_app

    from cnnlab.analysis import layers

    app_py = Path(__file__).parent.parent / "app.py"
    assert discover_asgi_app(app_py).import_string == "app:app"
    spec = importlib.util.spec_from_file_location("cnnlab_app_module", app_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imported, not run: no navigation, no page
    assert isinstance(module.app, st.App)
    layers._cached_inspect_spec.cache_clear()

    async def start_and_stop():
        async with module.lifespan(module.app):
            pass

    asyncio.run(start_and_stop())
    # With everything already imported the warm-up can end before this line: then none is left.
    for warm in [t for t in __import__("threading").enumerate() if t.name == "cnnlab-warm-up"]:
        warm.join(60)
    assert all(name in sys.modules for name in module.WARM_MODULES)
    assert layers._cached_inspect_spec.cache_info().currsize >= 1  # AlexNet, the page's default, is shaped


def test_the_server_listens_on_loopback_and_takes_small_uploads_by_default(monkeypatch):
    """Streamlit's own defaults listen on every interface and accept 200 MB uploads; the
    project's config (read by `streamlit run` from the repository root) narrows both."""
    from streamlit import config

    from cnnlab.arch.parse import MAX_JSON_BYTES

    root = Path(__file__).parent.parent
    monkeypatch.chdir(root)
    config.get_config_options(force_reparse=True)
    try:
        assert config.get_option("server.address") == "127.0.0.1"
        limit_mb = config.get_option("server.maxUploadSize")
        assert MAX_JSON_BYTES <= limit_mb * 1024 * 1024 < 200 * 1024 * 1024
        assert config.get_option("runner.postScriptGC") is False
    finally:
        monkeypatch.undo()
        config.get_config_options(force_reparse=True)


def test_a_run_store_whose_records_were_lost_is_shown_as_an_error_with_the_fix(
        tmp_path, monkeypatch):
    from cnnlab.runs.store import RunStore
    from cnnlab.views.text import markdown_text

    runs = tmp_path / "runs_*of*_[class](x)"  # Markdown in the path: shown literally
    store = RunStore(runs)
    store.run_dir(store.create("bn-lenet", {}, {}).id).mkdir(parents=True)
    (runs / "runs.sqlite").write_bytes(b"")  # truncated
    for wal in runs.glob("runs.sqlite-*"):
        wal.unlink()
    monkeypatch.setenv("CNNLAB_RUNS", str(runs))
    st.cache_resource.clear()
    at = AppTest.from_file(str(Path(__file__).parent.parent / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert any("empty (0 bytes)" in e.value and "restore runs.sqlite" in e.value
               and markdown_text(str(runs)) in e.value for e in at.error)
    assert (runs / "runs.sqlite").stat().st_size == 0
    st.cache_resource.clear()
