"""The server's side of "time to first content": sessions that speak Streamlit's own protocol
(a WebSocket to /_stcore/stream carrying protobuf BackMsg/ForwardMsg, as the browser's
frontend does), without drawing anything.

Why: in bench/load.py, 30 Chromium tabs and the server share this machine's 2 cores, and
while the tabs open the browser takes most of the CPU (the bench prints both), so a tab's
time to its title measures Chromium as much as cnnlab. In a class every student's browser
draws on its own computer; what the server owes each of them is the page's first element
soon after the session connects. These sessions time exactly that: from opening the
WebSocket to receiving the page's title (an h1 heading) in a ForwardMsg delta.

    first_content_times("http://127.0.0.1:8501", [("train", "model=bn-lenet", "student-01")])
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg


@dataclass(frozen=True)
class Visit:
    """One session: the page's URL path (no leading slash; "" for the default page), its query
    string, the page's title to wait for, and the student's name cookie (None: no name)."""

    path: str
    query: str
    title: str
    name: str | None = None


async def _first_content(base: str, visit: Visit, timeout_s: float) -> float:
    """Seconds from opening the session to the title's arrival. Raises TimeoutError."""
    headers = {"Origin": base}
    if visit.name:
        headers["Cookie"] = f"cnnlab_name={visit.name}"
    stream = base.replace("http", "ws", 1) + "/_stcore/stream"
    start = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        async with websockets.connect(stream, subprotocols=["streamlit"],
                                      additional_headers=headers, max_size=None) as ws:
            rerun = BackMsg()
            rerun.rerun_script.query_string = visit.query
            rerun.rerun_script.page_name = visit.path
            await ws.send(rerun.SerializeToString())
            async for data in ws:
                if _has_title(data, visit.title):
                    return time.perf_counter() - start
    raise TimeoutError(f"/{visit.path}: the session ended before its title arrived")


def _has_title(data: bytes, title: str) -> bool:
    msg = ForwardMsg()
    msg.ParseFromString(data)
    if msg.WhichOneof("type") != "delta" or msg.delta.WhichOneof("type") != "new_element":
        return False
    element = msg.delta.new_element
    return (element.WhichOneof("type") == "heading" and element.heading.tag == "h1"
            and element.heading.body.strip() == title)


async def _all(base: str, visits: list[Visit], timeout_s: float) -> list[float | str]:
    async def one(visit: Visit) -> float | str:
        try:
            return await _first_content(base, visit, timeout_s)
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            return f"/{visit.path}?{visit.query}: {type(exc).__name__}: {exc}"
    return await asyncio.gather(*(one(v) for v in visits))


def first_content_times(base: str, visits: list[Visit], timeout_s: float = 60
                        ) -> list[float | str]:
    """Open every visit's session at the same moment; per visit, the seconds to its title or
    a line saying why it never came."""
    # In a thread of its own: the caller may be inside an event loop (Playwright's sync API
    # runs one), where asyncio.run refuses to start another.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, _all(base, visits, timeout_s)).result()
