"""A class on one server: N browser tabs of M students open pages of the app at once, every
student queues a few tiny runs at nearly the same moment, and the server's CPU per idle tab.

    .venv/bin/python bench/load.py [--sessions 30] [--owners 10] [--runs-per-owner 3]
                                   [--idle-tabs 30] [--idle-s 30] [--run-timeout 900] [--cold]

Starts `streamlit run app.py` on 127.0.0.1 and a free port with a teacher token set (so each
run records its owner) and $CNNLAB_RUNS in a temporary folder, and drives Debian's Chromium
headless through Playwright. Each owner is a browser context with its own `cnnlab_name`
cookie, as if the student had picked a name; its tabs open Train first, then Architecture,
Lessons, Compare and Train in turn across the class. Unless `--cold`, one tab first opens each
page once, as a teacher checking the server before class would (its times are printed too).
Prints:

- page errors: Streamlit exception boxes, crashed tabs, uncaught errors and console errors;
- time to first content, twice, median and p95. First the server's: the same visits (pages,
  queries, name cookies) opened at once as sessions that speak Streamlit's protocol and draw
  nothing (bench/stream_client.py), timed from connecting to the page's title arriving.
  Then in Chromium: from navigation to the title (h1) on screen, timed inside each tab, with
  the server's CPU seconds over that opening beside the wall time; here 30 tabs render on the
  server's own 2 cores, which a class's 30 computers would not;
- runs: how many of the runs queued (bn-lenet, 1 epoch, 1,000 sample images) ended done with
  their metrics, read from the run store, and the order in which owners got their turns;
- server CPU per idle tab: K tabs on the Train page (the sidebar queue and the runs table
  refresh on timers) for a while, the server process's own CPU time (/proc, workers not
  counted) per tab as a % of one core.

Then a JSON summary on the last line. The server, its workers and the browser are stopped at
the end, also after an error.
"""

from __future__ import annotations

import os
import sys

# The checkout's root first on sys.path: cnnlab (and the tests' server helper) import without
# being installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

from bench.stream_client import Visit, first_content_times  # noqa: E402
from cnnlab.runs.store import RunStore, Status  # noqa: E402
from tests import app_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        # Hidden tabs keep their timers at full rate: a class has 30 visible tabs on 30 screens.
        "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows"]
VIEWPORT = {"width": 1280, "height": 900}
TOKEN = "load-bench-teacher-token"  # set so names matter; the bench never acts as teacher
TINY = "model=bn-lenet&epochs=1&data=sample&subset=1000"  # a run of a few seconds
PATHS = {"Train": f"/train?{TINY}", "Architecture": "/", "Lessons": "/lessons",
         "Compare": "/compare"}
TITLES = {"Train": "Train", "Architecture": "Architecture", "Lessons": "Lessons",
          "Compare": "Compare runs"}
OTHERS = ("Architecture", "Lessons", "Compare", "Train")  # after each owner's first Train tab
LOAD_TIMEOUT_S = 120  # 30 tabs at once on 2 cores: each first script run imports and inspects
CLICK_TIMEOUT_S = 60

# Set window.__firstContent (ms since navigation started) when an h1 is on screen; installed
# before any page script, so it is timed inside the page, not by Playwright's polling.
FIRST_CONTENT_JS = """(() => {
    const seen = () => Array.from(document.querySelectorAll('h1'))
        .some(h => h.offsetParent !== null && h.textContent.trim() !== '');
    const check = () => {
        if (window.__firstContent === undefined && document.body && seen()) {
            window.__firstContent = performance.now();
            observer.disconnect();
        }
    };
    const observer = new MutationObserver(check);
    const start = () => { observer.observe(document.documentElement,
                                           {subtree: true, childList: true}); check(); };
    if (document.documentElement) start(); else document.addEventListener('readystatechange', start);
})();"""


@dataclass
class Tab:
    page: Page
    owner: str
    kind: str
    errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    first_content_ms: float | None = None


# Console errors that are not the app's: this machine has no internet (the page icon is a
# Material Symbols SVG from fonts.gstatic.com), and Streamlit's frontend probes
# /<page>/_stcore/health and host-config before it finds the server's base path (404s).
NOT_THE_APP = ("https://fonts.gstatic.com/", "/_stcore/health", "/_stcore/host-config")


def console_error(tab: Tab, msg) -> None:
    if msg.type != "error":
        return
    where = msg.location.get("url", "") if msg.location else ""
    if "Failed to load resource" in msg.text and any(s in where for s in NOT_THE_APP):
        tab.ignored.append(where)
    else:
        tab.errors.append(f"console: {msg.text} ({where})")


def watch_errors(tab: Tab) -> None:
    page = tab.page
    page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
    page.on("crash", lambda _: tab.errors.append("tab crashed"))
    page.on("console", lambda msg: console_error(tab, msg))


def exceptions(tab: Tab) -> int:
    """Streamlit's exception boxes on the page now (an uncaught error in a script run)."""
    try:
        return tab.page.locator('[data-testid="stException"]').count()
    except PlaywrightError as exc:
        tab.errors.append(f"unreadable: {exc}")
        return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process itself (its children, the workers, are not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def plan(sessions: int, owners: int) -> list[tuple[str, str]]:
    """(owner, page kind) per tab: every owner's first tab is Train (it queues the runs), the
    rest cycle through the other pages across the class."""
    names = [f"student-{i + 1:02d}" for i in range(owners)]
    tabs = [(names[i], "Train") for i in range(min(owners, sessions))]
    for i in range(sessions - len(tabs)):
        tabs.append((names[i % owners], OTHERS[i % len(OTHERS)]))
    return tabs


def server_first_content(url: str, sessions: int, owners: int) -> dict:
    """The same visits as the tabs (pages, queries, name cookies), opened at once by protocol
    sessions that draw nothing (bench/stream_client.py): the server's own time to each page's
    title, without 30 browsers on the same cores."""
    visits = []
    for owner, kind in plan(sessions, owners):
        path, _, query = PATHS[kind].lstrip("/").partition("?")
        visits.append(Visit(path, query, TITLES[kind], owner))
    times = first_content_times(url, visits, timeout_s=LOAD_TIMEOUT_S)
    seconds = [t for t in times if isinstance(t, float)]
    return {"median": round(statistics.median(seconds), 2) if seconds else None,
            "p95": round(p95(seconds), 2) if seconds else None,
            "worst": round(max(seconds), 2) if seconds else None,
            "shown": len(seconds), "errors": [t for t in times if isinstance(t, str)][:5]}


def open_tabs(browser, url: str, sessions: int, owners: int) -> tuple[list, list[Tab]]:
    contexts, by_owner, tabs = [], {}, []
    for owner, kind in plan(sessions, owners):
        if owner not in by_owner:
            context = browser.new_context(viewport=VIEWPORT)
            context.add_cookies([{"name": "cnnlab_name", "value": owner, "url": url}])
            context.add_init_script(FIRST_CONTENT_JS)
            context.set_default_timeout(CLICK_TIMEOUT_S * 1000)
            by_owner[owner] = context
            contexts.append(context)
        tab = Tab(by_owner[owner].new_page(), owner, kind)
        watch_errors(tab)
        tabs.append(tab)
    # Every navigation starts before any is waited for: the class arrives at once.
    for tab in tabs:
        tab.page.goto(url + PATHS[tab.kind], wait_until="commit", timeout=LOAD_TIMEOUT_S * 1000)
    for tab in tabs:
        try:
            tab.page.wait_for_function("() => window.__firstContent !== undefined",
                                       timeout=LOAD_TIMEOUT_S * 1000, polling=100)
            tab.first_content_ms = tab.page.evaluate("() => window.__firstContent")
        except PlaywrightError as exc:
            tab.errors.append(f"no title within {LOAD_TIMEOUT_S} s: {exc.message.splitlines()[0]}")
    return contexts, tabs


def queue_runs(tabs: list[Tab], store: RunStore, runs_per_owner: int) -> tuple[float, int]:
    """Each owner presses Start `runs_per_owner` times, spread over its Train tabs, owner after
    owner (so first come, first served would give one owner's runs in a row). Returns the
    seconds from the first click to the last run queued, and the Start clicks that failed."""
    trains: dict[str, list[Tab]] = {}
    for tab in tabs:
        if tab.kind == "Train" and tab.first_content_ms is not None:
            trains.setdefault(tab.owner, []).append(tab)
    for owner_tabs in trains.values():  # the form drawn, its memory check done
        for tab in owner_tabs:
            tab.page.get_by_role("button", name="Start training").wait_for(
                timeout=LOAD_TIMEOUT_S * 1000)
    start, failed = time.perf_counter(), 0
    expected: dict[str, int] = {}  # owner -> runs it should have queued so far
    for owner, owner_tabs in trains.items():
        for n in range(runs_per_owner):
            tab = owner_tabs[n % len(owner_tabs)]
            if n >= len(owner_tabs):
                # Every earlier click of this owner landed first (this tab's among them): its
                # rerun draws the next Start button, under a new key.
                wait_queued(store, owner, n, tab)
            try:
                tab.page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached")
                tab.page.get_by_role("button", name="Start training").click()
                expected[owner] = n + 1
            except PlaywrightError as exc:
                tab.errors.append(f"Start: {exc.message.splitlines()[0]}")
                failed += 1
    for owner, count in expected.items():
        wait_queued(store, owner, count, trains[owner][0])
    return time.perf_counter() - start, failed


def wait_queued(store: RunStore, owner: str, count: int, tab: Tab) -> None:
    deadline = time.monotonic() + CLICK_TIMEOUT_S
    while owned(store, owner) < count:
        if time.monotonic() > deadline:
            tab.errors.append(f"{owner}: Start pressed, run {count} not queued within "
                              f"{CLICK_TIMEOUT_S} s")
            return
        time.sleep(0.05)


def owned(store: RunStore, owner: str) -> int:
    return sum(run.owner == owner for run in store.list(limit=10_000))


def wait_for_runs(store: RunStore, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if all(run.status.terminal for run in store.list(limit=10_000)):
            break
        time.sleep(1)
    return time.monotonic() - start


def idle_cpu(browser, url: str, pid: int, tabs: int, seconds: float) -> dict:
    """Server CPU with `tabs` tabs idle on the Train page: its timers keep refreshing the
    sidebar queue and the runs table while nothing changes in the store."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_cookies([{"name": "cnnlab_name", "value": "idle-student", "url": url}])
    context.add_init_script(FIRST_CONTENT_JS)
    try:
        pages = [context.new_page() for _ in range(tabs)]
        for page in pages:
            page.goto(url + "/train", wait_until="commit", timeout=LOAD_TIMEOUT_S * 1000)
        for page in pages:
            page.wait_for_function("() => window.__firstContent !== undefined",
                                   timeout=LOAD_TIMEOUT_S * 1000, polling=200)
        time.sleep(5)  # first script runs done, only timers left
        wall, cpu = time.monotonic(), cpu_seconds(pid)
        time.sleep(seconds)
        wall, cpu = time.monotonic() - wall, cpu_seconds(pid) - cpu
        errors = sum(page.locator('[data-testid="stException"]').count() for page in pages)
    finally:
        context.close()
    return {"tabs": tabs, "seconds": round(wall, 1), "server_cpu_s": round(cpu, 2),
            "per_tab_pct_of_core": round(100 * cpu / wall / tabs, 2) if tabs else None,
            "exceptions": errors}


def warm_up(browser, url: str) -> dict[str, float]:
    """The teacher opens each page once before the class arrives: the server's first script
    runs import PyTorch and the pages' modules. Seconds to first content per page."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(FIRST_CONTENT_JS)
    try:
        page, seconds = context.new_page(), {}
        for kind, path in PATHS.items():
            page.goto(url + path, wait_until="commit", timeout=LOAD_TIMEOUT_S * 1000)
            page.wait_for_function("() => window.__firstContent !== undefined",
                                   timeout=LOAD_TIMEOUT_S * 1000, polling=100)
            seconds[kind] = round(page.evaluate("() => window.__firstContent") / 1000, 2)
    finally:
        context.close()
    return seconds


def stop_workers(store: RunStore) -> None:
    """Workers run in sessions of their own and outlive the server: stop this bench's."""
    for run in store.list(Status.RUNNING):
        if run.worker_pid:
            try:
                os.kill(run.worker_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def measure(args: argparse.Namespace) -> dict:
    os.environ["CNNLAB_TEACHER_TOKEN"] = TOKEN  # the server inherits it (app_server.start)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        server, url = app_server.start(runs, Path(tmp) / "streamlit.log")
        store = RunStore(runs)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                                     headless=True)
                try:
                    return run_class(args, browser, url, server.pid, store)
                finally:
                    browser.close()
        finally:
            app_server.stop(server)
            stop_workers(store)


def run_class(args, browser, url: str, pid: int, store: RunStore) -> dict:
    summary: dict = {"sessions": args.sessions, "owners": args.owners,
                     "runs_per_owner": args.runs_per_owner}
    if args.warm:
        summary["warm_up_s"] = warm_up(browser, url)
    summary["server_first_content_s"] = server_first_content(url, args.sessions, args.owners)
    cpu_start, wall_start = cpu_seconds(pid), time.monotonic()
    contexts, tabs = open_tabs(browser, url, args.sessions, args.owners)
    # How much of the opening was the server's own work: its CPU seconds against the wall time
    # (the browser's tabs, on the same cores, are the rest).
    summary["opening"] = {"wall_s": round(time.monotonic() - wall_start, 1),
                          "server_cpu_s": round(cpu_seconds(pid) - cpu_start, 1)}
    loads = [t.first_content_ms / 1000 for t in tabs if t.first_content_ms is not None]
    by_kind = {kind: [t.first_content_ms / 1000 for t in tabs
                      if t.kind == kind and t.first_content_ms is not None] for kind in PATHS}
    summary["first_content_s"] = {
        "median": round(statistics.median(loads), 2) if loads else None,
        "p95": round(p95(loads), 2) if loads else None,
        "worst": round(max(loads), 2) if loads else None,
        "shown": len(loads),
        "by_page": {k: round(p95(v), 2) for k, v in by_kind.items() if v}}
    queued_s, failed_clicks = queue_runs(tabs, store, args.runs_per_owner)
    summary["queued_in_s"], summary["start_clicks_failed"] = round(queued_s, 1), failed_clicks
    summary["runs_wait_s"] = round(wait_for_runs(store, args.run_timeout), 1)
    summary["server_cpu_s_during_class"] = round(cpu_seconds(pid) - cpu_start, 1)
    exception_boxes = sum(exceptions(t) for t in tabs)
    other = [e for t in tabs for e in t.errors]
    summary["page_errors"] = exception_boxes + len(other)
    summary["exception_boxes"] = exception_boxes
    summary["other_errors"] = sorted(set(other))[:10]
    summary["console_not_the_app"] = sum(len(t.ignored) for t in tabs)
    for context in contexts:
        context.close()

    runs = store.list(limit=10_000)
    done = [run for run in runs if run.status is Status.DONE
            and store.metrics(run.id, kind="epoch")]
    summary["runs"] = {"queued": len(runs), "done_with_metrics": len(done),
                       "expected": args.owners * args.runs_per_owner,
                       "statuses": {s.value: sum(r.status is s for r in runs) for s in Status
                                    if any(r.status is s for r in runs)}}
    started = sorted((run for run in runs if run.started_at is not None),
                     key=lambda run: run.started_at)
    summary["owner_turns"] = [run.owner for run in started]
    # First come, first served would start them in this order.
    summary["owner_queue_order"] = [run.owner for run in sorted(
        runs, key=lambda run: run.created_at)]
    if args.idle_tabs:
        summary["idle"] = idle_cpu(browser, url, pid, args.idle_tabs, args.idle_s)
    summary["load_average"] = [round(x, 2) for x in os.getloadavg()]
    summary["cores"] = os.cpu_count()
    return summary


def report(s: dict) -> None:
    fc, runs, sfc = s["first_content_s"], s["runs"], s["server_first_content_s"]
    opening = s["opening"]
    rows = [
        ("page errors", f"{s['page_errors'] + len(sfc['errors'])}", "0"),
        ("time to first content, p95: server", f"{sfc['p95']} s (median {sfc['median']} s, "
         f"worst {sfc['worst']} s; {sfc['shown']}/{s['sessions']} sessions at once)", "< 2 s"),
        ("time to first content, p95: in Chromium", f"{fc['p95']} s (median {fc['median']} s, "
         f"worst {fc['worst']} s; {fc['shown']}/{s['sessions']} tabs at once, on the server's "
         f"cores: the server used {opening['server_cpu_s']} s of CPU in those "
         f"{opening['wall_s']} s)", "< 2 s"),
        ("runs done with metrics", f"{runs['done_with_metrics']} of {runs['expected']} "
         f"({runs['statuses']})", f"{runs['expected']} of {runs['expected']}"),
    ]
    if "idle" in s:
        idle = s["idle"]
        rows.append(("server CPU per idle Train tab",
                     f"{idle['per_tab_pct_of_core']}% of a core ({idle['tabs']} tabs, "
                     f"{idle['server_cpu_s']} s CPU in {idle['seconds']} s)", "< 1%"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':{width}s}  {'target':8s}  measured")
    for name, value, target in rows:
        print(f"{name:{width}s}  {target:8s}  {value}")
    print(f"time to first content p95 by page: {fc['by_page']}"
          + (f"; warm-up (one tab, before the class): {s['warm_up_s']}" if "warm_up_s" in s
             else "; no warm-up (--cold)"))
    print(f"{s['sessions']} tabs of {s['owners']} owners queued {runs['queued']} runs in "
          f"{s['queued_in_s']} s (Start clicks failed: {s['start_clicks_failed']}); all ended "
          f"{s['runs_wait_s']} s later")
    def short(owners: list) -> str:
        return " ".join(o.rsplit("-", 1)[-1] if o else "?" for o in owners)
    print(f"owners in the order their runs were queued:  {short(s['owner_queue_order'])}")
    print(f"owners in the order their runs started:      {short(s['owner_turns'])}")
    for error in s["other_errors"] + sfc["errors"]:
        print(f"  error: {error[:200]}")
    print(f"load average {' '.join(map(str, s['load_average']))} on {s['cores']} cores")
    print(json.dumps(s))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=30, help="browser tabs")
    parser.add_argument("--owners", type=int, default=10,
                        help="students (browser contexts, one name cookie each)")
    parser.add_argument("--runs-per-owner", type=int, default=3)
    parser.add_argument("--idle-tabs", type=int, default=30,
                        help="tabs idle on the Train page for the CPU measure (0: skip it)")
    parser.add_argument("--idle-s", type=float, default=30, help="seconds of the CPU measure")
    parser.add_argument("--cold", dest="warm", action="store_false",
                        help="no warm-up: the class's tabs are the server's first visitors")
    parser.add_argument("--run-timeout", type=float, default=900,
                        help="seconds to wait for every run to end")
    args = parser.parse_args()
    if args.sessions < args.owners:
        parser.error("--sessions must be at least --owners: each owner queues from a Train tab")
    report(measure(args))


if __name__ == "__main__":
    main()
