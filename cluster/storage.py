"""Check, before a run starts, that every node of the cluster reads and writes the same storage at a path.

On one machine any local path is shared. On a multi-node cluster a node-local path is not: each node would
write its own checkpoints, and the run would fail half-way (or "succeed" with its results scattered over
nodes). So every alive node writes a marker at the path and then looks for every other node's marker.
Relative paths are checked as given: a Ray worker resolves them against its own working directory, which
differs from node to node — exactly the trap this check exists to catch.

Needs a connected Ray (``cluster.connection``). Works for local paths and for pyarrow filesystem URIs
(s3://, gs://, ...), where it proves that every node has the credentials and endpoint to reach the bucket.
"""
from __future__ import annotations

import os
import sys
import uuid

import ray.cloudpickle as cloudpickle

from cluster.errors import EXIT_FAILED, EXIT_OK, BadInput
from cluster.nodes import alive_nodes


class StorageError(BadInput):
    """Some node cannot see what the others write at the path: the path (or where it lives) must change. The
    message names the nodes and the fix."""


def is_uri(path: str) -> bool:
    """True for a filesystem URI other than file:// (s3://bucket/x, gs://..., hdfs://...)."""
    return "://" in str(path) and not str(path).startswith("file://")


def as_read_here(path: str) -> str:
    """`path` as a driver on this machine reads it: a relative or ~ path made absolute against the directory it
    runs in; a URI (file:// included) as given."""
    return path if "://" in str(path) else os.path.abspath(os.path.expanduser(path))


def _node_probe(path: str, check_id: str, node_id: str, phase: str, others: list[str], remove_base: bool) -> dict:
    """Runs on one node. Defined at module level but shipped by value (see check_shared_storage)."""
    import os

    import pyarrow.fs as pafs

    report = {"node_id": node_id, "error": None, "seen": [], "where": path}
    try:
        if is_uri(path):
            fs, base = pafs.FileSystem.from_uri(path)
        else:
            local = path[len("file://"):] if path.startswith("file://") else path
            fs, base = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))
            report["where"] = base
        folder = f"{base.rstrip('/')}/.trainyard-storage-check-{check_id}"
        if phase == "exists":
            if is_uri(path):
                report["seen"] = [base] if fs.get_file_info(base).type != pafs.FileType.NotFound else []
            else:
                import glob
                report["seen"] = glob.glob(base) if glob.has_magic(base) else [base] * os.path.exists(base)
        elif phase == "write":
            report["base_existed"] = fs.get_file_info(base).type != pafs.FileType.NotFound
            fs.create_dir(folder, recursive=True)
            with fs.open_output_stream(f"{folder}/{node_id}") as out:
                out.write(node_id.encode())
        elif phase == "read":
            report["seen"] = [other for other in others
                              if fs.get_file_info(f"{folder}/{other}").type == pafs.FileType.File]
        elif phase == "remove_marker":
            fs.delete_file(f"{folder}/{node_id}")
        elif phase == "remove_folder":
            # The output folder itself only if this check created it: it should leave no trace.
            for target in [folder] + ([base] if remove_base else []):
                try:
                    info = fs.get_file_info(target)
                    if info.type == pafs.FileType.Directory and not fs.get_file_info(
                            pafs.FileSelector(target, allow_not_found=True)):
                        fs.delete_dir(target)
                except FileNotFoundError:
                    # On shared storage every node removes the same check folder at once: the one that comes
                    # second finds it gone, and must still go on to the output folder it created (CI saw it
                    # left behind when this raised).
                    continue
    except Exception as exc:  # reported per node, collected and raised once by the caller
        report["error"] = f"{exc.__class__.__name__}: {exc}"
    return report


def _ids_and_labels() -> tuple[list[str], dict[str, str]]:
    nodes = alive_nodes()
    return [n.node_id for n in nodes], {n.node_id: n.label for n in nodes}


def _on_every_node(ray, ids: list[str], path: str, check_id: str, phase: str, timeout_s: float,
                   others=lambda _nid: [], remove_base=lambda _nid: False) -> dict[str, dict]:
    """Run one phase of the probe on every node at once, each task pinned to its node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # By value: the nodes of a cluster joined from a laptop cannot import this repository's modules.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # num_cpus=0: the check must run even on nodes whose CPUs a running job holds.
    probe = ray.remote(num_cpus=0, max_retries=0)(_node_probe)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False))
            .remote(str(path), check_id, nid, phase, others(nid), remove_base(nid)) for nid in ids]
    try:
        return {r["node_id"]: r for r in ray.get(refs, timeout=timeout_s)}
    except ray.exceptions.GetTimeoutError:
        raise StorageError(f"storage check of {path!r}: some node did not answer within {timeout_s:.0f}s "
                           "(a busy or dead node?); retry, or check `trainyard cluster status`",
                           exit_code=EXIT_FAILED) from None  # the cluster, not the path


def is_shared(path: str, *, timeout_s: float = 60.0) -> dict:
    """Run the check and return its report without raising: {"ok", "path", "nodes": [...], "problems": [...]}."""
    import ray

    ids, labels = _ids_and_labels()
    check_id = uuid.uuid4().hex[:12]
    run = lambda phase, **kw: _on_every_node(ray, ids, path, check_id, phase, timeout_s, **kw)  # noqa: E731
    written = run("write")
    writers = [nid for nid, r in written.items() if r["error"] is None]
    read = run("read", others=lambda nid: [w for w in writers if w != nid])
    run("remove_marker")
    run("remove_folder", remove_base=lambda nid: not written[nid].get("base_existed", True))

    problems = []
    for nid in ids:
        where = written[nid]["where"]
        if written[nid]["error"]:
            problems.append(f"{labels[nid]} cannot write there ({where}): {written[nid]['error']}")
            continue
        missing = sorted(set(writers) - {nid} - set(read[nid]["seen"]))
        if read[nid]["error"]:
            problems.append(f"{labels[nid]} cannot read there ({where}): {read[nid]['error']}")
        elif missing:
            problems.append(f"{labels[nid]} does not see what {', '.join(labels[m] for m in missing)} wrote; "
                            f"on this node the path is {where}")
    return {"ok": not problems, "path": str(path), "problems": problems, "writers": len(writers),
            "nodes": [{"node": labels[nid], "where": written[nid]["where"]} for nid in ids]}


def check_readable_everywhere(path: str, *, timeout_s: float = 60.0) -> dict:
    """Raise StorageError unless every alive node finds ``path`` (input data: read-only, so no markers)."""
    import ray

    ids, labels = _ids_and_labels()
    reports = _on_every_node(ray, ids, path, uuid.uuid4().hex[:12], "exists", timeout_s)
    problems = [f"{labels[nid]} cannot find it ({r['where']})" + (f": {r['error']}" if r["error"] else "")
                for nid, r in reports.items() if r["error"] or not r["seen"]]
    if problems:
        raise StorageError(
            f"{path!r} is not visible on every node of the cluster:\n  - " + "\n  - ".join(problems)
            + "\nEvery node reads input data (Ray Data runs its tasks anywhere): use a URI (s3://bucket/prefix) "
              "or an absolute path on a filesystem every node mounts.")
    return {"ok": True, "path": str(path), "nodes": [{"node": labels[n], "where": r["where"]}
                                                     for n, r in reports.items()]}


def check_shared_storage(path: str, *, timeout_s: float = 60.0) -> dict:
    """Raise StorageError unless every alive node reads and writes the same storage at ``path``."""
    report = is_shared(path, timeout_s=timeout_s)
    if not report["ok"] and not report.get("writers"):
        # No node can write there (/proc, a folder of another user): not a question of sharing, and the advice to
        # use NFS or a bucket sent a user of a one-machine cluster looking for the wrong fix.
        raise StorageError(f"{path!r} cannot be written by any node of the cluster:\n  - "
                           + "\n  - ".join(report["problems"])
                           + "\nChoose a folder the cluster's nodes may create and write (--set output=PATH).")
    if not report["ok"]:
        n = len(report["nodes"])
        raise StorageError(
            f"{path!r} is not storage that all {n} nodes of the cluster share:\n  - "
            + "\n  - ".join(report["problems"])
            + "\nEvery node must read and write the same files: use a URI (s3://bucket/prefix, gs://...) or an "
              "absolute path on a filesystem every node mounts (NFS, a shared volume).")
    return report


def check_job_storage(output: str, data: list[str], *, timeout_s: float = 60.0) -> None:
    """What a job on several nodes needs: every node finds each of ``data`` and shares ``output``.
    Raises StorageError naming the first path and the nodes that fail."""
    for path in data:
        check_readable_everywhere(path, timeout_s=timeout_s)
    check_shared_storage(output, timeout_s=timeout_s)


def main(argv: list[str] | None = None) -> int:
    """`python -m cluster.storage OUTPUT [--data PATH ...]`: run by a submitted job before the pipeline, so a
    path some node cannot see fails the job in seconds, with the nodes named, rather than mid-run."""
    import argparse

    from cluster.connection import connect, disconnect

    ap = argparse.ArgumentParser(prog="python -m cluster.storage", description=main.__doc__)
    ap.add_argument("output", help="where the job writes: every node must share it")
    ap.add_argument("--data", action="append", default=[], help="input the job reads: every node must see it")
    args = ap.parse_args(argv)
    res = connect()
    try:
        check_job_storage(args.output, args.data)
    except StorageError as exc:
        print(f"trainyard: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED  # the job fails here, and the `&&` after this step stops it before any training
    finally:
        disconnect()        # an embedded Ray (no cluster named) stops, its workers reaped; a cluster is left
    print(f"trainyard storage check: all {res['nodes']} node(s) share {args.output}"
          + (f" and see {', '.join(args.data)}" if args.data else ""), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
