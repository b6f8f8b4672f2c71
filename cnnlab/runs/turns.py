"""Fair turns: the order in which queued runs start, round-robin across the people who queued them.

A plain FIFO lets one student's ten queued runs hold the whole class back. Here the next run
to start is the oldest queued run of the owner who has waited longest since their last start
(an owner who has never started one goes first, oldest queued run first among them); after
that turn they go to the back of the line. Runs without an owner (the CLI, a single-user lab)
count as one owner, so a single user still gets plain FIFO.

Pure functions of the runs, so the dispatcher (cnnlab.runs.jobs) and the queue positions the
pages show (RunStore.queue_position) follow one order, and it is tested without processes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cnnlab.runs.store import Run  # the store orders its queue with fair_order


def fair_order(queued: Sequence[Run], last_starts: Mapping[str | None, float]) -> list[Run]:
    """`queued` (oldest first, as the store keeps them) in the order they will start.

    `last_starts` maps an owner (None: runs without one) to when their latest run started; an
    owner missing from it has never started a run."""
    per_owner: dict[str | None, list[Run]] = {}
    for run in queued:
        per_owner.setdefault(run.owner, []).append(run)
    # Each owner's place in line: (when they last had a turn, when their oldest run was queued).
    # A turn handed out below puts them behind every real start time, in the order handed out.
    line = [((0, last_starts.get(owner, -math.inf), runs[0].created_at), index, owner)
            for index, (owner, runs) in enumerate(per_owner.items())]
    heapq.heapify(line)
    order: list[Run] = []
    turn = 0
    while line:
        _, index, owner = heapq.heappop(line)
        runs = per_owner[owner]
        order.append(runs.pop(0))
        if runs:
            turn += 1
            heapq.heappush(line, ((1, turn, 0.0), index, owner))
    return order
