"""Jobs on a cluster through the Ray Jobs API: list, status, logs, stop, wait. Used by `trainyard jobs` and
`trainyard submit --wait`.

A trainyard submission carries metadata (``METADATA_*`` keys) so that `status` can say which spec ran and
where its outputs (bundle, metrics, tune report) land.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Callable

from cluster.dashboard import job_client
from cluster.errors import BadInput

METADATA_SPEC, METADATA_MODE, METADATA_OUTPUT = "trainyard_spec", "trainyard_mode", "trainyard_output"
METADATA_RESUME = "trainyard_resume"        # the command that continues the search the job runs, if it runs one
METADATA_SET = "trainyard_set"              # the --set overrides it was submitted with (jobs looked alike without)
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# The last line of `train`, `tune` and `run` that made a bundle (the version's folder, or its URI), which
# `trainyard jobs status` finds in a job's log: the output holds every version, the log says which is the job's.
BUNDLE_WRITTEN = "bundle written to "


class JobNotFound(BadInput):
    """No job with that id on the cluster: the id must change (`trainyard jobs list` shows them)."""


def _status_name(status) -> str:
    return getattr(status, "value", str(status))


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


def list_jobs(address: str | None = None) -> list[dict]:
    """Every submission the cluster knows, newest first, as plain dicts."""
    client = job_client(address)
    jobs = [describe(j) for j in client.list_jobs() if j.submission_id]
    return sorted(jobs, key=lambda j: j["start_time_ms"] or 0, reverse=True)


def short_message(message: str) -> str:
    """Ray's job message without the log tail it appends to a failure (", last available logs (truncated to
    20,000 chars): ..."; `jobs logs` shows them) and without its final period."""
    return message.split(", last available logs", 1)[0].strip().rstrip(".")


def exit_code(info: dict) -> int | None:
    """The job's entrypoint exit code, where Ray reports it (the driver's, else its failure message's)."""
    import re

    if info.get("driver_exit_code") is not None:
        return int(info["driver_exit_code"])
    m = re.search(r"failed with exit code (\d+)", info.get("message") or "")
    return int(m[1]) if m else None


def describe(details) -> dict:
    meta = details.metadata or {}
    return {"id": details.submission_id, "status": _status_name(details.status),
            "message": details.message or "", "summary": short_message(details.message or ""),
            "entrypoint": details.entrypoint,
            "start_time_ms": details.start_time, "end_time_ms": details.end_time,
            "started": _when(details.start_time), "ended": _when(details.end_time),
            "spec": meta.get(METADATA_SPEC), "mode": meta.get(METADATA_MODE),
            "output": meta.get(METADATA_OUTPUT), "resume": meta.get(METADATA_RESUME), "set": meta.get(METADATA_SET),
            "driver_exit_code": details.driver_exit_code}


def job_info(job_id: str, address: str | None = None, *, client=None) -> dict:
    client = client or job_client(address)
    try:
        return describe(client.get_job_info(job_id))
    except RuntimeError as exc:  # the SDK reports an unknown id as a RuntimeError with the HTTP 404 text
        if "404" in str(exc) or "does not exist" in str(exc):
            raise JobNotFound(f"no job {job_id!r} on the cluster at {client.get_address()}: "
                              "`trainyard jobs list` shows the ids") from None
        raise


def written_bundle(log: str) -> str | None:
    """The bundle the job's log says it wrote (its last `bundle written to` line), or None."""
    lines = [line for line in log.splitlines() if line.startswith(BUNDLE_WRITTEN)]
    return lines[-1].removeprefix(BUNDLE_WRITTEN).strip() if lines else None


def logs(job_id: str, address: str | None = None) -> str:
    client = job_client(address)
    job_info(job_id, client=client)
    return client.get_job_logs(job_id)


def follow_logs(job_id: str, address: str | None = None, *, write: Callable[[str], None] = print,
                client=None) -> dict:
    """Stream the job's logs until it ends; returns its final info."""
    client = client or job_client(address)
    job_info(job_id, client=client)

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(stream())
    # The stream closes when the driver exits; the job's status can trail it by a moment.
    return wait(job_id, client=client, timeout_s=60)


def wait(job_id: str, address: str | None = None, *, client=None, timeout_s: float | None = None,
         poll_s: float = 1.0) -> dict:
    """Block until the job reaches SUCCEEDED, FAILED or STOPPED; returns its final info."""
    client = client or job_client(address)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        info = job_info(job_id, client=client)
        if info["status"] in TERMINAL:
            return info
        if deadline is not None and time.monotonic() > deadline:
            return info
        time.sleep(poll_s)


def stop(job_id: str, address: str | None = None) -> bool:
    """Ask the cluster to stop the job; False when it had already ended."""
    client = job_client(address)
    job_info(job_id, client=client)
    return bool(client.stop_job(job_id))
