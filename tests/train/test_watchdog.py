"""The lost-node watchdog: it stops a run only when a node it used is gone and the nodes left
cannot hold the workers for the whole timeout, and the error names the node."""

from __future__ import annotations

import threading

import pytest

from stars.train.watchdog import LostNodeWatchdog, NodeLostError, fits

HEAD = {"NodeID": "head" * 8, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 1.0}}
WORKER = {"NodeID": "work" * 8, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 2.0}}


def test_fits_counts_bundles_per_node():
    assert fits([HEAD, WORKER], {"CPU": 1.0}, 3)
    assert not fits([HEAD, WORKER], {"CPU": 1.0}, 4)
    assert not fits([HEAD], {"CPU": 2.0}, 1)  # 3 CPUs in all, but no node holds 2
    assert not fits([HEAD, WORKER], {"CPU": 0.5, "GPU": 1.0}, 1)
    assert fits([{"Resources": {"CPU": 8, "GPU": 2}}], {"CPU": 0.5, "GPU": 1.0}, 2)


def _watch(nodes_over_time, per_worker, timeout_s):
    """Run the watchdog around a stand-in for ``fit()`` that ends when interrupted (or after
    2 s); returns (interrupted, error)."""
    interrupted = threading.Event()
    calls = {"n": 0}

    def nodes():
        i = min(calls["n"], len(nodes_over_time) - 1)
        calls["n"] += 1
        return nodes_over_time[i]

    dog = LostNodeWatchdog(
        per_worker, 1, timeout_s, "demo-stage1", poll_s=0.01, nodes=nodes,
        interrupt=interrupted.set,
    )  # fmt: skip
    try:
        with dog:
            interrupted.wait(2.0)
    except NodeLostError as err:
        return interrupted.is_set(), str(err)
    return interrupted.is_set(), None


def test_a_lost_node_that_leaves_no_room_stops_the_run_naming_it():
    interrupted, error = _watch([[HEAD, WORKER], [HEAD]], {"CPU": 2.0}, timeout_s=0.2)
    assert interrupted
    assert "node workworkwork (10.0.0.2) was lost" in error
    assert "scale.lost_node_timeout_s" in error and "same --name" in error


def test_room_left_or_no_loss_lets_the_run_go_on():
    # the worker group fits on the head alone: Ray Train restarts it there
    assert _watch([[HEAD, WORKER], [HEAD]], {"CPU": 1.0}, timeout_s=0.05) == (False, None)
    # nothing lost
    assert _watch([[HEAD, WORKER]], {"CPU": 2.0}, timeout_s=0.05) == (False, None)
    # lost, but back before the timeout (e.g. the autoscaler replaced it)
    back = [[HEAD, WORKER], [HEAD], [HEAD, WORKER]]
    assert _watch(back, {"CPU": 2.0}, timeout_s=5.0) == (False, None)


def test_the_watchdog_only_runs_in_the_main_thread():
    out = {}

    def trial():
        out["result"] = _watch([[HEAD, WORKER], [HEAD]], {"CPU": 2.0}, timeout_s=0.01)

    thread = threading.Thread(target=trial)
    thread.start()
    thread.join()
    assert out["result"] == (False, None)


def test_a_real_error_inside_is_not_hidden():
    dog = LostNodeWatchdog({"CPU": 1.0}, 1, 1.0, "x", nodes=lambda: [HEAD])
    with pytest.raises(ZeroDivisionError), dog:
        1 / 0  # noqa: B018


def test_the_default_stop_raises_in_the_main_thread():
    """Without a stand-in interrupt, the watchdog signals its own process: the blocked main
    thread gets NodeLostError (as ``trainer.fit()`` would, inside Ray's get)."""
    import time

    seen = iter([[HEAD, WORKER]] + [[HEAD]] * 10_000)
    dog = LostNodeWatchdog(
        {"CPU": 2.0}, 1, 0.05, "demo-stage1", poll_s=0.01, nodes=lambda: next(seen)
    )
    start = time.monotonic()
    with pytest.raises(NodeLostError, match="was lost"), dog:
        while time.monotonic() < start + 5:
            time.sleep(0.01)
    assert time.monotonic() - start < 4  # interrupted, not run out
