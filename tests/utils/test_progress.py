"""Tests for openjepa.utils.progress: a tqdm bar on a terminal, a bounded number of plain lines elsewhere."""

import io

import pytest
from tqdm import tqdm

from openjepa.utils.progress import format_duration, progress, status_line


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_terminal_output_is_a_few_lines_not_one_per_update():
    out, clock = io.StringIO(), FakeClock()
    bar = progress(total=10_000, desc="demo", stream=out, clock=clock, interval=30.0)
    assert bar.bar is None
    for i in range(1, 10_001):  # 10,000 updates over 60 fake seconds
        clock.t = i * 60 / 10_000
        bar.update()
    bar.close()
    bar.close()  # closing twice writes no second final line
    lines = out.getvalue().splitlines()
    assert lines == [
        "demo: 5000/10000 (50%), 166.7 it/s, eta 30s",
        "demo: 10000/10000 (100%), 166.7 it/s, eta 0s",
        "demo: 10000/10000 (100%), 166.7 it/s, took 1m00s",
    ]


@pytest.mark.parametrize(("interval", "expected"), [(5.0, 13), (1.0, 61), (120.0, 1)])
def test_the_interval_bounds_the_line_count(interval, expected):
    out, clock = io.StringIO(), FakeClock()
    for i in progress(range(10_000), desc="x", stream=out, clock=clock, interval=interval):
        clock.t = (i + 1) * 60 / 10_000  # 10,000 updates over 60 fake seconds
    assert len(out.getvalue().splitlines()) == expected  # 60 / interval, plus the final line


def test_iterating_yields_everything_and_ends_with_a_final_line():
    out, clock = io.StringIO(), FakeClock()
    bar = progress([1, 2, 3], desc="features", unit="batch", stream=out, clock=clock)
    items = []
    for item in bar:
        items.append(item)
        clock.t += 2.0
    assert items == [1, 2, 3] and bar.n == 3 and bar.total == 3
    assert out.getvalue() == "features: 3/3 (100%), 0.5 batch/s, took 6s\n"


def test_postfix_and_unknown_total_in_the_status_line():
    out, clock = io.StringIO(), FakeClock()
    bar = progress(iter(range(5)), desc="stream", stream=out, clock=clock, interval=0.0)
    bar.set_postfix(loss="0.4123", lr=1.5e-4, epoch=2)
    clock.t = 1.0
    bar.update(4)
    bar.close()
    assert out.getvalue().splitlines() == [
        "stream: 4 it, 4.0 it/s, loss=0.4123, lr=0.00015, epoch=2",
        "stream: 4 it, 4.0 it/s, took 1s, loss=0.4123, lr=0.00015, epoch=2",
    ]


def test_the_rate_counts_only_what_was_done_here():
    line = status_line("pretrain", 1234, 5000, 100.0, 234, "step")
    assert line == "pretrain: 1234/5000 (24%), 2.3 step/s, eta 26m49s"
    assert status_line("", 0, None, 0.0, 0) == "0 it"
    assert status_line("slow", 1, 10, 40.0, 1, "epoch") == "slow: 1/10 (10%), 0.025 epoch/s, eta 6m00s"
    assert [format_duration(s) for s in (0.4, 59.6, 306.4, 7500, float("inf"))] == [
        "0s",
        "1m00s",
        "5m06s",
        "2h05m",
        "?",
    ]


def test_a_terminal_gets_a_tqdm_bar():
    out = Terminal()
    with progress(total=4, desc="live", stream=out) as bar:
        assert isinstance(bar.bar, tqdm)
        bar.update(3)
        bar.set_postfix(loss="0.5")
        assert bar.bar.n == 3 and bar.n == 3
    assert "\r" in out.getvalue() and "live" in out.getvalue() and "loss=0.5" in out.getvalue()


def test_disabled_shows_nothing_but_still_iterates():
    out, tty = io.StringIO(), Terminal()
    assert list(progress(range(4), stream=out, interval=0.0, enabled=False)) == [0, 1, 2, 3]
    bar = progress(total=2, stream=tty, enabled=False)
    bar.update(2)
    bar.close()
    assert bar.bar is None and out.getvalue() == "" and tty.getvalue() == ""


def test_bad_use_is_refused():
    with pytest.raises(ValueError, match="interval must be >= 0"):
        progress(total=1, interval=-1.0)
    with pytest.raises(TypeError, match="nothing to iterate"):
        list(progress(total=1, stream=io.StringIO()))
