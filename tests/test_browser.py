"""The app in a real Chromium: a Streamlit server in a subprocess, driven with Playwright.

Screenshots of each page go to test-artifacts/; with CNNLAB_UPDATE_SCREENSHOTS=1 they are also
copied to assets/screenshots/, where the README shows them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from cnnlab.runs.store import RunStore, Status
from tests import app_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "assets" / "screenshots"
VIEWPORT = {"width": 1440, "height": 1100}
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 180  # a fresh server's first step takes seconds; slow CI machines more
STEP_TIMEOUT_S = 30  # one page interaction; a first visit imports and inspects (seconds)

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)",
                allow_module_level=True)
if importlib.util.find_spec("playwright") is None:
    pytest.skip("playwright for Python is not installed (pip install playwright)",
                allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

expect.set_options(timeout=STEP_TIMEOUT_S * 1000)


def stop_workers(runs: Path) -> None:
    """Workers run in sessions of their own and outlive the server: stop this test's."""
    for run in RunStore(runs).list(Status.RUNNING):
        if run.worker_pid:
            try:
                os.kill(run.worker_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


@pytest.fixture
def server(tmp_path):
    runs, log = tmp_path / "runs", tmp_path / "streamlit.log"
    try:
        proc, url = app_server.start(runs, log, START_TIMEOUT_S)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield url
    finally:
        app_server.stop(proc)
        stop_workers(runs)


@pytest.fixture
def chromium_page():
    # Not `browser`: pytest-playwright's fixture has that name.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            page = chromium.new_page(viewport=VIEWPORT)
            page.set_default_timeout(STEP_TIMEOUT_S * 1000)
            yield page
        finally:
            chromium.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("CNNLAB_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SCREENSHOTS / f"{name}.png")


def no_exception(page: Page) -> None:
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def wait_idle(page: Page) -> None:
    """Until the script run ends (the 'running' indicator in the header disappears)."""
    page.wait_for_timeout(300)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)


def go_to(page: Page, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=title).click()
    expect(page.get_by_role("heading", name=title, level=1)).to_be_visible(timeout=60_000)
    wait_idle(page)


def curve_points(page: Page) -> int:
    """Points of the train-loss curve in the page's Plotly chart (0 before there is one)."""
    return page.evaluate("""() => {
        const plot = document.querySelector('.js-plotly-plot');
        const trace = plot && plot.data && plot.data.find(t => t.name === 'train loss');
        return trace ? trace.x.length : 0;
    }""")


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_the_app_in_a_browser(server, chromium_page):
    try:
        walk_through_the_app(chromium_page, server)
    except Exception:
        screenshot(chromium_page, "failure")  # what the page showed, beside the traceback
        raise


def walk_through_the_app(page: Page, url: str) -> None:
    # A deep link is the fresh server's first request: Streamlit must not fall into its legacy
    # multipage mode (which listed every file in pages/ and ran train.py alone). The link
    # carries a view: its model and the settings that differ from the textbook's.
    page.goto(f"{url}/train?model=vgg11&lr=0.02&epochs=2")
    expect(page.get_by_role("heading", name="Train", level=1)).to_be_visible(timeout=60_000)
    links = page.locator('[data-testid="stSidebarNav"]').get_by_role("link")
    expect(links).to_have_count(5)
    expect(links).to_contain_text(["Architecture", "Train", "Inside", "Compare", "Lessons"])
    expect(page.get_by_role("combobox", name="Model")).to_have_value("vgg11")
    expect(page.get_by_role("spinbutton", name="Learning rate")).to_have_value("0.02")
    expect(page.get_by_role("spinbutton", name="Epochs")).to_have_value("2")
    wait_idle(page)
    no_exception(page)
    assert "model=vgg11" in page.url and "lr=0.02" in page.url  # the URL keeps the view
    page.goto(url)
    expect(page.get_by_role("heading", name="Architecture", level=1)).to_be_visible(
        timeout=60_000)
    wait_idle(page)
    no_exception(page)
    parameters = page.locator('[data-testid="stMetric"]').filter(has_text="Parameters")
    expect(parameters).to_contain_text("46,764,746")  # AlexNet, the default
    page.get_by_role("radio", name="ResNet", exact=True).click()  # the Family control
    expect(parameters).to_contain_text("11,178,378", timeout=30_000)  # ResNet-18 at 96 px
    wait_idle(page)
    screenshot(page, "architecture")

    # Train: the Architecture page's model is offered first; a tiny BN-LeNet run instead.
    go_to(page, "Train")
    no_exception(page)
    model = page.get_by_role("combobox", name="Model")
    expect(model).to_have_value("resnet18 (from the Architecture page)")
    model.click()
    page.get_by_role("option", name="bn-lenet", exact=True).click()
    wait_idle(page)
    page.get_by_text("sample (3,000 / 1,000)").click()
    wait_idle(page)
    page.get_by_role("spinbutton", name="Epochs").fill("10")
    page.get_by_role("spinbutton", name="Epochs").press("Enter")
    wait_idle(page)
    page.get_by_text("More options").click()
    page.get_by_role("spinbutton", name="Log every (steps)").fill("2")
    page.get_by_role("spinbutton", name="Log every (steps)").press("Enter")
    wait_idle(page)
    expect(page.get_by_text("needs about")).to_be_visible()  # the memory estimate
    wait_idle(page)  # a click during a rerun can be lost (once in CI: no run was ever queued)
    page.get_by_role("button", name="Start training").click()
    # Queued, as the toast says, or refused with a message that a later rerun would clear:
    # say which here, not 180 s later as "no first point".
    queued, refused = page.get_by_text("Queued bn-lenet"), page.get_by_text("Not started")
    expect(queued.or_(refused).first).to_be_visible(timeout=STEP_TIMEOUT_S * 1000)
    assert refused.count() == 0, refused.first.inner_text()

    # The first step in a fresh server takes seconds (the worker imports torch): wait for it,
    # then for the live chart to grow without a reload.
    wait_for(lambda: curve_points(page) > 0, RUN_TIMEOUT_S, "the first point")
    first = curve_points(page)
    wait_for(lambda: curve_points(page) > first or page.get_by_text("Done.").count() > 0,
             RUN_TIMEOUT_S, "more points")
    no_exception(page)
    expect(page.get_by_text("Done.")).to_be_visible(timeout=RUN_TIMEOUT_S * 1000)
    assert curve_points(page) >= 30  # 120 steps, a point every 2
    wait_idle(page)
    page.get_by_role("heading", name="Progress").evaluate(
        "heading => heading.scrollIntoView({block: 'start'})")  # the run and its curves
    screenshot(page, "train")

    # The other pages, when the navigation has them by now.
    nav = page.locator('[data-testid="stSidebarNav"]')
    for title in ("Inside", "Compare"):
        if nav.get_by_role("link", name=title).count():
            go_to(page, title)
            no_exception(page)
            screenshot(page, title.lower())

    # Lessons: a guess revealed, and a pair of runs queued for the class.
    go_to(page, "Lessons")
    no_exception(page)
    lessons_step(page)


def lessons_step(page: Page) -> None:
    page.get_by_text("7.3 Network in network (NiN)").click()  # the section's expander
    nin = page.locator(".st-key-card-7-3-3")  # "count NiN's resources"
    guess = nin.get_by_role("spinbutton").first
    guess.fill("2000000")
    guess.press("Enter")
    wait_idle(page)
    nin.get_by_role("button", name="Reveal").first.click()
    expect(nin.get_by_text("Right: it is 1,992,166 parameters; your guess is off by 0.4%")).to_be_visible()
    no_exception(page)
    page.get_by_text("7.1 AlexNet").click()
    lenet = page.locator(".st-key-card-7-1-5")  # ReLU vs sigmoid in LeNet
    lenet.get_by_role("button", name="Queue both runs").click()
    expect(lenet.get_by_text("Queued:")).to_be_visible()
    expect(lenet.get_by_role("link", name="Compare them")).to_be_visible()
    no_exception(page)
    wait_idle(page)
    nin.evaluate("card => card.scrollIntoView({block: 'start'})")
    screenshot(page, "lessons")


def test_a_students_name_stays_in_the_browser(tmp_path, monkeypatch, chromium_page):
    """On a class server, the name picked once comes back in a new tab (a cookie), and no
    link carries it."""
    monkeypatch.setenv("CNNLAB_TEACHER_TOKEN", "a phrase only the teacher knows")
    proc, url = app_server.start(tmp_path / "runs", tmp_path / "streamlit.log", START_TIMEOUT_S)
    try:
        page = chromium_page
        page.goto(url)
        name = page.locator('input[aria-label="Your name"]')
        name.fill("Ada <i>L</i>")
        name.press("Enter")
        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar.get_by_text("Ada <i>L</i>")).to_be_visible()  # escaped, not italic
        wait_idle(page)
        # The cookie is written by a script the browser runs after drawing the name; a new
        # tab opened before that would rightly ask again.
        page.wait_for_function("() => document.cookie.includes('cnnlab_name=')",
                               timeout=60_000)
        second = page
        second.goto(f"{url}/train")  # a fresh load is a new session; the cookie stays
        expect(second.locator('[data-testid="stSidebar"]').get_by_text("Ada <i>L</i>")
               ).to_be_visible(timeout=60_000)
        expect(second.locator('input[aria-label="Your name"]')).to_have_count(0)
        assert "Ada" not in second.url
    finally:
        app_server.stop(proc)
        stop_workers(tmp_path / "runs")
