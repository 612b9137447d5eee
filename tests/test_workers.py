"""The worker pool behind ``--workers``: order, errors and a worker that dies."""

from __future__ import annotations

import os

import pytest

from hodata.errors import DataError
from hodata.workers import ordered_map


def square(ctx, item):
    return item * item + ctx


def fail_on_seven(ctx, item):
    if item == 7:
        raise DataError("frame seven is broken", "/data/7.jpg")
    return item


def die_on_seven(ctx, item):
    if item == 7:
        os._exit(3)  # a crash the worker cannot report (a segfault, the OOM killer)
    return item


@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_results_come_back_in_order(workers):
    assert list(ordered_map(square, 1, range(50), workers, batch=3)) == [i * i + 1 for i in range(50)]


def test_an_error_in_a_worker_is_raised_with_its_type_and_the_workers_traceback():
    with pytest.raises(DataError, match="frame seven is broken") as info:
        list(ordered_map(fail_on_seven, None, range(20), 2, batch=2))
    assert info.value.path == "/data/7.jpg"
    assert any("in a build worker" in note and "fail_on_seven" in note for note in info.value.__notes__)


def test_a_worker_that_dies_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match=r"build worker ended unexpectedly \(exit code 3\)"):
        list(ordered_map(die_on_seven, None, range(40), 2, batch=2))


def unpicklable_on_five(ctx, item):
    return (lambda: item) if item == 5 else item


def test_a_result_that_does_not_pickle_is_that_batchs_error():
    with pytest.raises(Exception, match="pickle"):
        list(ordered_map(unpicklable_on_five, None, range(12), 2, batch=2))


def echo_big(ctx, item):
    return item + b"!" * 100_000  # a large result through the result pipe


def test_large_tasks_and_results_never_wedge_the_pipes():
    import signal

    def stuck(*_):
        raise TimeoutError("the pool stopped moving")

    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(60)
    try:
        items = [bytes([i]) * 200_000 for i in range(40)]  # each task far larger than a pipe's buffer
        got = list(ordered_map(echo_big, None, items, 4, batch=1))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert [g[:200_000] for g in got] == items and all(len(g) == 300_000 for g in got)


LOADED: dict[str, int] = {}


def loaded_by_warm_up(ctx, item):
    import time

    time.sleep(0.02)
    return LOADED.get("model", 0) + item


def test_the_warm_up_runs_before_the_fork_and_waits_report_progress():
    """``warm`` loads state in this process that every forked worker then has; ``on_wait`` is called while
    results are slow to come."""
    waits = []
    LOADED.clear()
    got = list(ordered_map(loaded_by_warm_up, None, range(16), 2, batch=4,
                           warm=lambda: LOADED.update(model=100), on_wait=lambda: waits.append(1), wait_s=0.01))
    assert got == [100 + i for i in range(16)]  # every item, none of them run here, each saw the warm-up
    assert waits
