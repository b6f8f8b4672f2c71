"""How fast the Architecture page answers in a real browser: the first load after a fresh server
start, and edit-to-screen latency (a width edit until the parameter count changes on screen),
across all seven families.

    .venv/bin/python bench/architecture_page.py [--rounds 3] [--runs N] [--app DIR]

Starts `streamlit run app.py` on 127.0.0.1 and a free port (with $CNNLAB_RUNS in a temporary
folder), drives Debian's Chromium headless through Playwright, prints the first load and the
median and p95 edit latency, then stops the server. Latency is timed inside the page: from the
Enter key that commits the edit to the DOM mutation that shows the new count (Playwright's own
waits poll at growing intervals and would round it up). `--runs N` repeats the whole
measurement with N fresh servers. `--app DIR` serves another checkout's app with this bench, to
compare against an older commit on the same machine:

    git worktree add /tmp/before 53f7e6d && ln -s $PWD/.venv /tmp/before/.venv
    .venv/bin/python bench/architecture_page.py --app /tmp/before
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab (and the tests' server helper) import without
# being installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # noqa: E402

from cnnlab.analysis.layers import inspect_spec  # noqa: E402
from cnnlab.arch.presets import PRESETS  # noqa: E402
from cnnlab.views.editor import FAMILY_TITLES, presets_for  # noqa: E402
from tests import app_server  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--headless"]
FAMILIES = tuple(FAMILY_TITLES.values())  # AlexNet ... DenseNet, as the page's buttons say
WIDTHS = ("0.5", "0.75", "1.25", "1")  # each changes every family's parameter count
ALEXNET_PARAMS = "46,764,746"
ARTIFACTS = ROOT / "test-artifacts"

# The parameter count's text, read from the page (the metric labelled "Parameters").
PARAMS_JS = """() => {
    for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
        if (m.textContent.includes('Parameters'))
            return m.querySelector('[data-testid="stMetricValue"]').textContent;
    }
    return null;
}"""
# Before an edit: remember the count, note the time of the Enter key that commits the edit,
# and set window.__latency (ms) when the count on screen changes.
# The width inputs a user can see: after some family switches the DOM held two width inputs
# for a minute while the screenshot showed one; only visible ones count.
WIDTH_INPUTS_JS = ("Array.from(document.querySelectorAll('input[aria-label=\"Width multiplier\"]'))"
                   ".filter(e => e.offsetParent !== null)")
EDIT_TIMEOUT_S = 20
ARM_JS = """(params) => {
    const read = eval(params);
    const before = read();
    window.__enter = null;
    document.addEventListener('keydown', e => {
        if (e.key === 'Enter' && window.__enter === null) window.__enter = performance.now();
    }, {capture: true, once: true});
    window.__latency = undefined;
    window.__observer = new MutationObserver(() => {
        const now = read();
        if (now !== null && now !== before && window.__latency === undefined) {
            window.__observer.disconnect();
            window.__latency = performance.now() - window.__enter;
        }
    });
    window.__observer.observe(document.body,
                              {subtree: true, childList: true, characterData: true});
}"""


def wait_idle(page: Page) -> None:
    """Until the script run ends: the 'running' indicator gone and one width input on screen
    (a fragment's rerun shows no indicator, and shows the old family's form until it ends)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=60_000)
    try:
        page.wait_for_function(f"() => {WIDTH_INPUTS_JS}.length === 1", timeout=60_000)
    except PlaywrightError:
        failed(page, "(waiting for the run to end)", "-")
        raise


def switch_family(page: Page, family: str) -> None:
    """Pick a family and wait until its first preset's parameter count is on screen."""
    name = next(key for key, title in FAMILY_TITLES.items() if title == family)
    expected = f"{inspect_spec(PRESETS[presets_for(name)[0]]).total_params:,}"
    page.get_by_role("radio", name=family, exact=True).click()
    page.wait_for_function(f"() => ({PARAMS_JS})() === '{expected}'", timeout=60_000,
                           polling=20)
    wait_idle(page)


def first_load(page: Page, url: str) -> float:
    """Seconds from navigation to AlexNet's parameter count on screen."""
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_function(f"() => ({PARAMS_JS})() === '{ALEXNET_PARAMS}'", timeout=120_000,
                           polling=20)
    return time.perf_counter() - start


def edit_latency(page: Page, value: str) -> float | None:
    """Milliseconds from committing a width edit to the new parameter count on screen; None
    when it did not show within EDIT_TIMEOUT_S."""
    box = page.locator('input[aria-label="Width multiplier"]:visible')
    box.fill(value)
    page.evaluate(ARM_JS, f"({PARAMS_JS})")
    box.press("Enter")
    # The latency is taken inside the page when the count changes; Python only collects it.
    try:
        page.wait_for_function("() => window.__latency !== undefined",
                               timeout=EDIT_TIMEOUT_S * 1000, polling=50)
    except PlaywrightTimeoutError:
        return None
    latency = page.evaluate("() => window.__latency")
    wait_idle(page)
    return latency


def failed(page: Page, family: str, width: str) -> None:
    """Keep what the page showed when an edit never reached the screen."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "architecture-bench-failure.png"))
    inputs = page.evaluate("() => Array.from(document.querySelectorAll("
                           "'input[aria-label=\"Width multiplier\"]'))"
                           ".map(e => [e.value, e.offsetParent !== null])")
    print(f"width inputs (value, visible): {inputs}", file=sys.stderr)
    print(f"no new parameter count after {family} width {width}: see "
          f"{ARTIFACTS / 'architecture-bench-failure.png'}", file=sys.stderr)


def measure(rounds: int, app: Path) -> tuple[float, dict[str, list[float]], list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        server, url = app_server.start(Path(tmp) / "runs", Path(tmp) / "streamlit.log",
                                       root=app)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1440, "height": 1100})
                    load = first_load(page, url)
                    wait_idle(page)
                    latencies: dict[str, list[float]] = {f: [] for f in FAMILIES}
                    failures: list[str] = []
                    for _ in range(rounds):
                        for family in FAMILIES:
                            switch_family(page, family)
                            for width in WIDTHS:
                                try:
                                    latency = edit_latency(page, width)
                                except PlaywrightError:
                                    failed(page, family, width)
                                    raise
                                if latency is None:
                                    failed(page, family, width)
                                    failures.append(f"{family} width {width}")
                                else:
                                    latencies[family].append(latency)
                finally:
                    browser.close()
        finally:
            app_server.stop(server)
    return load, latencies, failures


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def commit_of(checkout: Path) -> str:
    """The checkout's commit, marked "+changes" when its working tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True,
                              text=True).stdout.strip()
    return (git("rev-parse", "--short", "HEAD") or "no git commit") + (
        " +changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the seven families")
    parser.add_argument("--runs", type=int, default=1, help="fresh servers, one after another")
    parser.add_argument("--app", type=Path, default=ROOT,
                        help="the checkout whose app.py is served (default: this one)")
    args = parser.parse_args()
    print(f"app: {args.app.resolve()} at {commit_of(args.app)}")
    for run in range(1, args.runs + 1):
        load, latencies, failures = measure(args.rounds, args.app.resolve())
        every = [ms for values in latencies.values() for ms in values]
        print(f"run {run}: first load {load:.2f} s; {len(every)} edits: median "
              f"{statistics.median(every):.0f} ms, p95 {p95(every):.0f} ms, "
              f"worst {max(every):.0f} ms; {len(failures)} not shown within "
              f"{EDIT_TIMEOUT_S} s{': ' + ', '.join(failures) if failures else ''}")
        for family, values in latencies.items():
            print(f"  {family:10s} median {statistics.median(values):4.0f} ms  "
                  f"p95 {p95(values):4.0f} ms")
    print(f"load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
