"""Progress bars for transfers (uploads, downloads, restores, export/import): tqdm on stderr
with bytes, rate and time left.

    add_progress_options(parser)   --progress (show it even when stderr is not a terminal) / --no-progress
    bar(args, label)               a Progress callable (done, total) for host.backup.ops, or None
    waiting(args)                  a line "<state>  <elapsed>" while a command waits (dm ... --wait), or None
    end_all()                      end every open bar's line (before an error is printed)

By default a bar appears only when stderr is a terminal and the transfer has run for
a second (a script's stderr gets nothing but errors); $SIMVAULT_PROGRESS_DELAY changes
that second.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

DELAY_ENV = "SIMVAULT_PROGRESS_DELAY"
DEFAULT_DELAY = 1.0
BAR_FORMAT = "{desc}: {percentage:3.0f}% |{bar}| {n_fmt}B/{total_fmt}B  {rate_fmt}  ETA {remaining}"
UNKNOWN_TOTAL_FORMAT = "{desc}: {n_fmt}B  {rate_fmt}  {elapsed} so far"   # a download of unknown size

_OPEN: list[Bar | Waiting] = []


def add_progress_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", action="store_true", default=None,
                       help="show the progress bar on stderr even when it is not a terminal (default: only on "
                            "a terminal, for transfers over a second)")
    group.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")


def bar(args: argparse.Namespace, label: str) -> Bar | None:
    """A progress callback for one transfer, or None when no bar is wanted."""
    wanted = getattr(args, "progress", None)
    if wanted is False or (wanted is None and not sys.stderr.isatty()):
        return None
    delay = 0.0 if wanted else _delay()
    return Bar(label, delay)


def waiting(args: argparse.Namespace) -> Waiting | None:
    """A status line for a wait whose end is not known in bytes (a DM job), or None."""
    return Waiting(_delay()) if sys.stderr.isatty() and getattr(args, "progress", None) is not False else None


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, DEFAULT_DELAY)))
    except ValueError:
        return DEFAULT_DELAY


class Bar:
    """A (done, total) callback drawing one tqdm bar, created at the first call (when the total is known;
    a total of None: bytes and rate only, until close())."""

    def __init__(self, label: str, delay: float) -> None:
        self.label, self.delay = label, delay
        self._bar: Any = None

    def __call__(self, done: int, total: int | None) -> None:
        if self._bar is None:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=self.label, unit="B", unit_scale=True, unit_divisor=1000,
                             file=sys.stderr, delay=self.delay, leave=True, dynamic_ncols=True,
                             bar_format=BAR_FORMAT if total is not None else UNKNOWN_TOTAL_FORMAT)
            _OPEN.append(self)
        elif total is not None and total != self._bar.total:        # a resumed or re-planned transfer
            self._bar.total = total
        self._bar.update(done - self._bar.n)
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        """End the bar's line (it stays on the screen as the last state)."""
        if self._bar is not None:
            self._bar.close()
            if self in _OPEN:
                _OPEN.remove(self)


class Waiting:
    """One line, "<what is going on>  <elapsed>", redrawn as the state changes, drawn once the
    wait has lasted the delay (tqdm draws bars of a known total; this is a plain status line)."""

    def __init__(self, delay: float) -> None:
        self.delay, self.started, self.drawn = delay, time.monotonic(), 0
        _OPEN.append(self)

    def show(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        if elapsed < self.delay:
            return
        line = f"{text}  {int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}"
        sys.stderr.write("\r" + line + " " * max(0, self.drawn - len(line)))
        sys.stderr.flush()
        self.drawn = len(line)

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = 0
        if self in _OPEN:
            _OPEN.remove(self)


def end_all() -> None:
    for open_bar in list(_OPEN):
        open_bar.close()
