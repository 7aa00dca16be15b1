"""How a tuning trial's Train run hands each epoch's row to the trial (`run_reporting`, `RowChannel`).

Kept apart from `tuning.trial` on purpose: the Train controller unpickles `RowChannel`, so it imports this module,
and nothing here may pull in torch or our pipeline (a second or more of imports on 2 cores, in every trial's
controller, which itself never needs torch for a one-worker run: `jobs.train.default_trainer`).
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import ray
from ray.train import UserCallback

ROW_WAIT_S = 0.05          # how often a trial looks for its Train run's new rows


class RowChannel(UserCallback):
    """A Ray Train callback that hands every report's row (rank 0's metrics, as Ray's `TuneReportCallback` does,
    with "checkpoint_path" when the report has a checkpoint) to the trial that runs the Train run: one JSON line
    each, appended to a file the trial reads (`forward_rows`).

    Why not Ray's `TuneReportCallback`: it sends the rows through a `ray.util.queue.Queue`, an actor, so a Python
    process per trial (~2 CPU-s to start on 2 cores, where a search is CPU-bound), and Tune's session fetches from
    that queue only while the trial runs: a row put within a few tens of ms of the run's end could miss the last
    fetch and the trial ended with no metrics at all (seen in CI twice at a 0.02 s controller poll, which is why
    trials polled at 0.25 s: ~2.5 s more per 10-epoch trial). Here the trial reads the file to its end after the
    run returns, so no row is lost, and trials poll at the same interval as any run.

    The file needs no shared storage: Ray Train V2 starts a run's controller, where callbacks run, on the node of
    the process that calls `trainer.fit()` (a label selector on that node's id), i.e. this trial's node."""

    def __init__(self, path: str):
        self.path = path
        self.node_id = ray.get_runtime_context().get_node_id()

    def after_report(self, run_context, metrics: list, checkpoint) -> None:
        if ray.get_runtime_context().get_node_id() != self.node_id:
            raise RuntimeError(f"the Ray Train controller runs on another node than its tuning trial, so it cannot "
                               f"hand the trial its rows through {self.path}: this Ray version places the "
                               "controller differently; pin Ray to the version in pyproject.toml")
        row = dict(metrics[0])
        if checkpoint is not None:
            row["checkpoint_path"] = checkpoint.path
        line = json.dumps(row, default=_plain)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def _plain(value):
    """A metric value JSON has no type for, as a plain Python value: numpy scalars and arrays, and torch tensors,
    through their `tolist()` (duck-typed: this module must not import either). Anything else fails the report,
    naming the value: a row is never written without it."""
    if callable(getattr(value, "tolist", None)):
        return value.tolist()
    raise TypeError(f"a reported metric holds {value!r} ({type(value).__name__}), which a tuning trial cannot "
                    "pass on: report plain numbers, strings, lists or dicts (or numpy/torch values)")


def forward_rows(path: str, offset: int, report) -> int:
    """Call `report(row)` for each whole line of `path` after byte `offset`; returns the offset after them (a line
    still being written stays for the next call)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        report(json.loads(line))
    return offset + end


def rows_folder() -> Path:
    """This node's folder of trials' row files (`RowChannel`), `<pid>-<random>.jsonl` each. A trial removes its
    own file when its run ends; Tune ends the process of a trial it stops (ASHA) without unwinding it, so each
    new trial first removes the files of trial processes no longer alive."""
    folder = _own_folder(Path(tempfile.gettempdir()) / f"trainyard-trial-rows-{os.getuid()}")
    for leftover in folder.glob("*.jsonl"):
        try:
            os.kill(int(leftover.name.split("-", 1)[0]), 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except (ValueError, OSError):     # not ours to judge (another user's process, a foreign name)
            pass
    return folder


def _own_folder(folder: Path) -> Path:
    """`folder`, this user's alone (mode 0700). One folder for every user, made 0755 by whoever ran first, failed
    every trial of the next user (PermissionError in mkstemp), and a folder made first by someone else could be
    read or emptied by them: one a user, a link, or anyone else's is refused."""
    import stat

    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{folder} is not a folder of this user's alone (owner uid {st.st_uid}, mode "
                              f"{stat.filemode(st.st_mode)}): a trial keeps its rows there. Remove it, or set TMPDIR "
                              "to a folder of yours")
    return folder


def run_reporting(train, report, wait_s: float = ROW_WAIT_S) -> Any:
    """Run `train(channel)` in a thread, with `channel` a `RowChannel`, and `report` each row it hands over, in
    order, from this thread (the trial's: Tune's `tune.report` belongs there). Returns what `train` returned, or
    raises what it raised, once every row it reported has been passed on."""
    fd, path = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=".jsonl", dir=rows_folder())
    os.close(fd)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = train(RowChannel(path))
        except BaseException as exc:     # handed to the trial's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="trainyard-trial-run", daemon=True)
    worker.start()
    offset = 0
    try:
        while worker.is_alive():
            worker.join(wait_s)
            offset = forward_rows(path, offset, report)
        forward_rows(path, offset, report)
    finally:
        Path(path).unlink(missing_ok=True)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
