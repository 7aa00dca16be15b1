"""Where a command's lines go: plain lines, or on a terminal the same lines above a progress bar.

Every line trainyard prints passes through one `Display`: the driver's own ("[prepare] ...", "[tune] ...") and
the training workers' that Ray forwards ("[train] epoch 3/15 ..."). It knows the lines that count epochs and
trials and, on a terminal, keeps a bar of each (rich) under the lines until it is full; when stdout is not a
terminal (CI logs, a pipe, the tests) it prints the lines alone, exactly as they came.
"""
from __future__ import annotations

import argparse
import re
import sys
import threading
from typing import Optional, TextIO

# The lines that move a bar, as jobs/worker.py (_progress_line, _early_stop_line) and tuning/lines.py
# (search_line, trial_epoch_line, trial_end_line, search_end_line) write them; tests/test_output.py feeds this
# module the real producers' lines, so a change of wording fails there.
EPOCH = re.compile(r"^\[train\] epoch (?P<done>\d+)/(?P<total>\d+)\b")
EARLY_STOP = re.compile(r"^\[train\] early stop\b")
SEARCH = re.compile(r"^\[tune\] (?:starting|resuming) experiment .*?\b(?P<total>\d+) trial\(s\)")
TRIAL_EPOCH = re.compile(r"^\[tune\] (?P<trial>\S+) epoch (?P<done>\d+)/(?P<total>\d+)\b")
TRIAL_END = re.compile(r"^\[tune\] (?P<trial>\S+) (?:finished|stopped early|failed)\b")
SEARCH_END = re.compile(r"^\[tune\] \d+ trial\(s\) in ")


class Display:
    """One command's output. `live`: draw bars (a terminal); default: whether stdout is one. `console`: the
    rich Console to draw on (default: one on stdout)."""

    def __init__(self, live: Optional[bool] = None, console=None):
        self.live = getattr(sys.stdout, "isatty", lambda: False)() if live is None else live
        self._console = console
        self._progress = None            # rich.progress.Progress while a bar is shown
        self._tasks: dict[str, int] = {}  # "epochs" / "trials" -> the bar's task id
        self._lock = threading.Lock()    # the driver and Ray's log thread both print

    # --------------------------------------------------------------------------------------------- lines
    def line(self, msg: str) -> None:
        """Print one of trainyard's lines (to stdout), and move a bar if it says an epoch or a trial ended."""
        with self._lock:
            if self.live:
                self._follow(msg)      # first: the line and the bar it moved show together
            if self._progress is not None:
                self._progress.console.print(msg, markup=False, highlight=False, soft_wrap=True)
            else:
                _write(sys.stdout, msg)
            if self._progress is not None and all(t.finished for t in self._progress.tasks):
                # Full: leave it drawn as it ended, and print what follows (evaluation, the bundle) as plain lines.
                self._stop()

    def error(self, msg: str) -> None:
        """Print a warning or error line (to stderr; above the bar while one is shown)."""
        with self._lock:
            if self._progress is not None:
                self._progress.console.print(msg, markup=False, highlight=False, soft_wrap=True, style="red")
            else:
                _write(sys.stderr, msg)

    def close(self) -> None:
        """Stop drawing: a bar left unfinished (an error, Ctrl-C) stays as it was, and later lines are plain."""
        with self._lock:
            self._stop()

    # --------------------------------------------------------------------------------------------- bars
    def _follow(self, msg: str) -> None:
        if m := EPOCH.match(msg):
            self._set("epochs", int(m["done"]), int(m["total"]))
        elif EARLY_STOP.match(msg) and "epochs" in self._tasks:
            done = self._completed("epochs")
            self._set("epochs", done, done, note="early stop")
        elif m := SEARCH.match(msg):
            self._set("trials", 0, int(m["total"]))
        elif "trials" in self._tasks and (m := TRIAL_EPOCH.match(msg)):
            self._set("trials", self._completed("trials"), self._total("trials"),
                      note=f"{m['trial']} epoch {m['done']}/{m['total']}")
        elif "trials" in self._tasks and TRIAL_END.match(msg):
            self._set("trials", self._completed("trials") + 1, self._total("trials"))
        elif "trials" in self._tasks and SEARCH_END.match(msg):
            # Over (a resumed search never hears of the trials that ended before): the bar shows the whole search.
            self._set("trials", self._total("trials"), self._total("trials"))

    def _task(self, name: str):
        return next(t for t in self._progress.tasks if t.id == self._tasks[name])

    def _completed(self, name: str) -> int:
        return int(self._task(name).completed)

    def _total(self, name: str) -> int:
        return int(self._task(name).total)

    def _set(self, name: str, done: int, total: int, note: str = "") -> None:
        if self._progress is None:
            self._start()
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(name, total=total)
        self._progress.update(self._tasks[name], completed=done, total=total,
                              description=f"{name} ({note})" if note else name)
        # Now, not at the next tick: a line printed meanwhile redraws the bar as last refreshed.
        self._progress.refresh()

    def _start(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = self._console or Console(file=sys.stdout)
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console)
        self._progress.start()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress, self._tasks = None, {}


def _write(stream: TextIO, msg: str) -> None:
    # One write per line: print() writes the newline separately, and two threads' lines would interleave.
    stream.write(msg + "\n")
    stream.flush()


class ShowVersion(argparse.Action):
    """`trainyard --version`: the package's version and, from a git checkout, its commit (`jobs.version`),
    worked out when asked rather than at every command's start."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="which trainyard this is (its git commit from a "
                                                               "checkout), as a bundle's lineage.json records it")

    def __call__(self, parser, namespace, values, option_string=None):
        from jobs.version import trainyard_version

        print(f"trainyard {trainyard_version()}")
        parser.exit()
