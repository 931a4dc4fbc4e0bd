"""Quota pacing and the credential pause, with an injected clock."""

from __future__ import annotations

from daemon import logs, quota


def test_a_burst_up_to_the_limit_goes_at_once_then_calls_are_paced() -> None:
    window = quota.SlidingWindow(limit=3, window=3600.0)
    assert [window.acquire(100.0), window.acquire(100.5), window.acquire(101.0)] == [0, 0, 0]
    # The fourth call must wait until the first leaves the window.
    assert window.acquire(102.0) == 3600.0 - 2.0
    assert window.used(102.0) == 3
    assert window.acquire(3700.0) == 0.0  # the first call left the window
    assert window.acquire(3700.2) == 100.5 + 3600.0 - 3700.2


def test_no_window_of_an_hour_ever_holds_more_than_the_limit() -> None:
    window = quota.SlidingWindow(limit=500)
    now, sent = 0.0, []
    while now < 3 * 3600:
        wait = window.acquire(now)
        if wait == 0:
            sent.append(now)
            now += 1.0  # a busy daemon would call every second
        else:
            now += wait
    for index, start in enumerate(sent):
        inside = [moment for moment in sent[index:] if moment < start + 3600.0]
        assert len(inside) <= 500
    assert len(sent) >= 1400  # and it does use the allowance


def test_history_from_the_state_file_counts_after_a_restart() -> None:
    window = quota.SlidingWindow(limit=2, history=[10.0, 20.0])
    assert window.acquire(30.0) == 10.0 + 3600.0 - 30.0
    assert window.acquire(3611.0) == 0.0


def test_backlog_estimate() -> None:
    assert quota.backlog_seconds(100, 500, 0) == 0.0
    assert quota.backlog_seconds(1500, 500, 0) == 2 * 3600.0
    assert quota.backlog_seconds(500, 500, 250) == 0.5 * 3600.0
    assert logs.duration(7200.0, precision=60) == "2 h"
    assert logs.duration(12000.0, precision=60) == "3 h 20 min"
    assert logs.duration(90.0, precision=60) == "2 min"


def test_pause_starts_once_blocks_until_then_lets_one_probe_through() -> None:
    pause = quota.Pause()
    assert pause.blocked_until(0.0, 60.0) is None
    assert pause.pause(until=60.0) is True  # the caller logs the pause once
    assert pause.pause(until=120.0) is False  # still the same pause
    assert pause.blocked_until(100.0, 60.0) == 120.0
    assert pause.blocked_until(120.0, 60.0) is None  # the probe
    assert pause.blocked_until(120.5, 60.0) == 180.0  # everyone else waits for its outcome
    assert pause.resume() is True  # the probe succeeded: the caller logs the recovery
    assert pause.blocked_until(121.0, 60.0) is None
    assert pause.resume() is False


def test_wait_for_slot_counts_the_calls_already_waiting_without_taking_one() -> None:
    window = quota.SlidingWindow(3, window=100.0, history=[10.0, 20.0])
    assert window.wait_for_slot(30.0) == 0.0  # one slot free
    assert window.wait_for_slot(30.0, ahead=1) == 80.0  # that slot is promised: 10 + 100 - 30
    assert window.wait_for_slot(30.0, ahead=2) == 90.0
    assert window.wait_for_slot(30.0, ahead=3) == 100.0  # beyond a window of waiting: look later
    assert window.used(30.0) == 2  # nothing was taken


def test_a_released_slot_is_free_again() -> None:
    window = quota.SlidingWindow(1, window=100.0)
    assert window.acquire(5.0) == 0.0
    assert window.acquire(6.0) > 0
    window.release(5.0)
    assert window.acquire(6.0) == 0.0
    window.release(42.0)  # a slot never taken: nothing happens
    assert window.used(6.0) == 1
