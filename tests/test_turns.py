"""Tests for cnnlab.runs.turns: fair turns across owners, as a pure function and in the store."""

from __future__ import annotations

from pathlib import Path

from cnnlab.runs.store import Run, RunStore, Status
from cnnlab.runs.turns import fair_order

SPEC = {"family": "sequential"}
CONFIG = {"epochs": 1}


def queued(*owners: str | None) -> list[Run]:
    """Queued runs, oldest first, one per owner given; ids are owner + a counter."""
    return [Run(id=f"{owner}{i}", status=Status.QUEUED, model="m", spec={}, config={},
                created_at=float(i), owner=owner) for i, owner in enumerate(owners)]


def ids(runs: list[Run]) -> list[str]:
    return [run.id for run in runs]


def test_one_owners_many_runs_are_interleaved_with_the_others_not_ahead_of_them() -> None:
    runs = queued("ann", "ann", "ann", "ann", "bob", "cy", "bob")
    assert ids(fair_order(runs, {})) == ["ann0", "bob4", "cy5", "ann1", "bob6", "ann2", "ann3"]


def test_the_owner_who_started_least_recently_goes_first() -> None:
    runs = queued("ann", "bob", "cy")
    # ann started a run a moment ago, bob long ago, cy never: cy, then bob, then ann.
    assert ids(fair_order(runs, {"ann": 100.0, "bob": 10.0})) == ["cy2", "bob1", "ann0"]


def test_runs_without_an_owner_count_as_one_owner_and_keep_fifo_among_themselves() -> None:
    runs = queued(None, None, None, "ann")
    assert ids(fair_order(runs, {})) == ["None0", "ann3", "None1", "None2"]
    alone = queued(None, None, None)
    assert ids(fair_order(alone, {None: 5.0})) == ids(alone)


def test_the_store_queue_positions_and_claims_follow_fair_turns(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    a1, a2, a3 = (store.create("m", SPEC, CONFIG, owner="ann").id for _ in range(3))
    b1 = store.create("m", SPEC, CONFIG, owner="bob").id
    assert ids(store.queued()) == [a1, b1, a2, a3]
    assert [store.queue_position(i) for i in (a1, a2, a3, b1)] == [1, 3, 4, 2]
    assert store.claim_next(pid=1).id == a1
    # ann just had a turn; bob has waited since he queued.
    assert [store.queue_position(i) for i in (b1, a2, a3)] == [1, 2, 3]
    assert store.claim_next(pid=1).id == b1
    b2 = store.create("m", SPEC, CONFIG, owner="bob").id
    assert ids(store.queued()) == [a2, b2, a3]  # ann's start was before bob's
