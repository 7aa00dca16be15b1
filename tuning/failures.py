"""What `trainyard tune` says of a failed trial: its cause, from the traceback Tune wrote, and where that traceback
is kept. Ray Tune's own report of the failure is kept out of the output (cluster.quiet.TUNE_FAILURE_LOGS).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def error_line(trial) -> str:
    """The cause of a failed Tune `trial`, from the traceback Tune wrote (`trial.error_file`), and where that
    traceback is kept (`kept_error_file`, else Tune's own copy)."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    if not text:
        return "see the trial's error.txt"
    return f"{last_error_line(text) or 'no message'} (traceback: {kept_error_file(trial) or trial.error_file})"


def kept_error_file(trial) -> Optional[str]:
    """Where a failed trial's traceback stays: in its folder of the experiment (OUTPUT/ray/...) when that storage is
    local, copied there now (Tune copies its staging folder there only at its next snapshot); else None: Tune's
    copy on the driver's node (`trial.error_file`, under Ray's session folder). Never raises: an exception in a
    Tune callback would end the search."""
    import shutil

    import pyarrow.fs
    try:
        if not trial.error_file or not isinstance(trial.storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            return None
        kept = Path(trial.path, Path(trial.error_file).name)
        if kept != Path(trial.error_file):
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(trial.error_file, kept)
        return str(kept)
    except Exception:  # noqa: BLE001 - the staging copy is still named
        return None


def last_error_line(text: str) -> str:
    """The line of a traceback that names the cause."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Train's "training failed: ..." line (jobs.train.TrainError) names the cause; else the last line.
    for line in reversed(lines):
        if "TrainError" in line or "training failed" in line:
            return line.split("TrainError: ", 1)[-1]
    return lines[-1] if lines else ""
