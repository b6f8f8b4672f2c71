"""bench/stream_client.py against a real server: the load bench's server-side time to first
content times what it says (a session's page title arriving), so its figure cannot rot."""

from __future__ import annotations

import pytest

from bench.stream_client import Visit, first_content_times
from tests import app_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    with app_server.running(tmp / "runs", tmp / "streamlit.log") as url:
        yield url


def test_every_page_kind_sends_its_title_to_a_session(url):
    visits = [Visit("", "", "Architecture"), Visit("train", "model=bn-lenet&epochs=1", "Train",
                                                   "student-01"),
              Visit("lessons", "", "Lessons"), Visit("compare", "", "Compare runs", "student-02")]
    times = first_content_times(url, visits, timeout_s=60)
    assert all(isinstance(t, float) and 0 < t < 60 for t in times), times


def test_a_title_the_page_never_shows_is_reported_not_timed(url):
    [outcome] = first_content_times(url, [Visit("train", "", "Not the title")], timeout_s=5)
    assert isinstance(outcome, str) and outcome.startswith("/train?: TimeoutError")


def test_it_runs_inside_a_running_event_loop_as_under_playwright(url):
    import asyncio

    async def inside():
        return first_content_times(url, [Visit("lessons", "", "Lessons")], timeout_s=60)
    [seconds] = asyncio.run(inside())
    assert isinstance(seconds, float)
