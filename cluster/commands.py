"""`trainyard cluster ...` and `trainyard jobs ...`: where work runs, and the jobs running there.

    trainyard cluster up [--workers N] [--cpus-per-node C]   a real local multi-node cluster (head + N workers)
    trainyard cluster status                                 its address, token file, nodes and resources
    trainyard cluster down                                   stop exactly the processes `up` started
    trainyard cluster check-storage PATH [--address A]       do all nodes share PATH? (marker from every node)
    trainyard jobs list | status ID | logs ID [--follow] | stop ID   [--address http://head:8265]

The composition root (`trainyard.cli`) calls ``register(subparsers, kit)``. A command returns 0 when done and 1
when what it reports failed (a failed job, a dead node); our errors (wrong address, missing token, unknown job
id: 2; a cluster that did not come up: 1) go up to the composition root, which maps them to exit codes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from cluster import jobs_api, local, state as cluster_state
from cluster.errors import EXIT_FAILED, EXIT_OK, Failure


def _err(msg: str) -> None:
    print(f"trainyard: error: {msg}", file=sys.stderr, flush=True)


def _say(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------- cluster

def cmd_cluster_up(args) -> int:
    state = local.up(args.workers, args.cpus_per_node, args.state_dir, object_store_mb=args.object_store_mb,
                     timeout_s=args.timeout, progress=_say)
    _say(f"cluster up: {len(state['nodes'])} node(s) × {args.cpus_per_node} CPU, all on 127.0.0.1\n"
         f"  GCS address   {state['address']}        (trainyard run SPEC --address {state['address']})\n"
         f"  dashboard     {state['dashboard_url']}  (trainyard submit SPEC --address {state['dashboard_url']})\n"
         f"  Ray Client    {state['client_address']}\n"
         f"  token file    {state['token_path']}\n"
         f"  state         {cluster_state.state_path(args.state_dir)}\n"
         "For tools other than trainyard (ray status, ray job list, ray.init() in your own scripts):\n"
         f"  export {local.client_exports(state)}\n"
         "Stop it with: trainyard cluster down")
    return EXIT_OK


def cmd_cluster_status(args) -> int:
    info = local.status(args.state_dir)
    if args.json:
        _say(json.dumps(info, indent=2))
        return EXIT_OK if not info["error"] else EXIT_FAILED
    _say(f"address    {info['address']}\ndashboard  {info['dashboard_url']}\n"
         f"client     {info['client_address']}\ntoken      {info['token_path']}\nstate      {info['state_file']}")
    for p in info["processes"]:
        _say(f"  process {p['name']:<9} pid {p['pid']:<8} {'alive' if p['alive'] else 'GONE'}   log {p['log']}")
    if info["error"]:
        _err(info["error"])
        return EXIT_FAILED
    _say(f"{len(info['nodes'])} node(s) alive:")
    for n in info["nodes"]:
        free = n.get("available") or {}
        res = ", ".join(f"{k} {_fmt_resource(k, v)}" + (f" ({free.get(k, 0.0):g} free)" if k in ("CPU", "GPU")
                                                          and n.get("available") is not None else "")
                        for k, v in n["resources"].items())
        _say(f"  {n['node_id'][:12]}  {n['ip']:<10} {'head  ' if n['head'] else 'worker'}  {res}")
    return EXIT_OK


def _fmt_resource(name: str, value: float) -> str:
    if name in ("memory", "object_store_memory"):
        return f"{value / 2**30:.1f}GiB"
    return f"{value:g}"


def cmd_cluster_down(args) -> int:
    if not cluster_state.read_state(folder := cluster_state.state_dir(args.state_dir)):
        # Exit 0: a teardown (a trap on EXIT, a CI cleanup) run twice did its job; where to look is said all the same.
        _say(f"cluster down: no local cluster recorded in {cluster_state.state_path(folder)}: nothing to stop "
             f"({cluster_state.elsewhere_hint()})")
        return EXIT_OK
    stopped = local.down(args.state_dir, timeout_s=args.timeout, progress=_say)
    _say(f"cluster down: stopped {len(stopped)} process(es); none of them is left")
    return EXIT_OK


def cmd_cluster_check_storage(args) -> int:
    from cluster.connection import connect
    from cluster.storage import StorageError, check_shared_storage

    address = args.address
    if address is None and not os.environ.get("RAY_ADDRESS") and _recorded_cluster():
        # The cluster `cluster up` started, as `submit` and `jobs` find it: an embedded Ray of one node would
        # answer "shared by all 1 node(s)" about a question asked of several.
        address = "auto"
    # A relative path from this folder, as `train --address` takes one: each node resolved it against its own Ray
    # folder (and the head was left an empty folder of that name).
    path = args.path if "://" in args.path else os.path.abspath(os.path.expanduser(args.path))
    res = connect(address)
    try:
        report = check_shared_storage(path, timeout_s=args.timeout)
    except StorageError as exc:
        # Here an unshared path is the finding the user asked about, not bad input to the command.
        raise Failure(str(exc)) from None
    _say(f"{path}: shared by all {res['nodes']} node(s)")
    for n in report["nodes"]:
        _say(f"  {n['node']}: {n['where']}")
    return EXIT_OK


def _recorded_cluster() -> bool:
    try:
        return bool(cluster_state.read_state())
    except cluster_state.StateError:
        return False


# ---------------------------------------------------------------------------------------------- jobs

def cmd_jobs_list(args) -> int:
    jobs = jobs_api.list_jobs(args.address)
    if not jobs:
        _say("no jobs")
    for j in jobs:
        # Which command ran and where it wrote: several jobs of one spec (a train, a search) looked alike.
        what = (f"{j['spec']} ({j.get('mode') or 'run'}{', ' + j['set'] if j.get('set') else ''}) → "
                f"{j.get('output')}" if j.get("spec") else j["entrypoint"][:60])
        _say(f"{j['id']:<44} {j['status']:<10} {j['started']}  {what}")
    return EXIT_OK


def print_job(info: dict) -> None:
    _say(f"job      {info['id']}\nstatus   {info['status']}" + (f"  ({info['summary']})" if info["summary"] else "")
         + f"\nstarted  {info['started']}\nended    {info['ended']}")
    if info.get("spec"):
        _say(f"spec     {info['spec']} ({info.get('mode') or 'run'})"
             + (f"\nset      {info['set']}" if info.get("set") else ""))
    if info.get("output"):
        # Where the bundle, metrics.json and the tune report land: the spec's `output`, on cluster storage.
        _say(f"output   {info['output']}")
    else:
        _say(f"command  {info['entrypoint']}")


def cmd_jobs_status(args) -> int:
    info = jobs_api.job_info(args.job_id, args.address)
    print_job(info)
    if info["status"] == "SUCCEEDED" and (bundle := jobs_api.written_bundle(jobs_api.logs(args.job_id,
                                                                                         args.address))):
        # Which version is this job's: OUTPUT/bundle names the newest, maybe another job's since.
        _say(f"bundle   {bundle}")
    return EXIT_FAILED if info["status"] in ("FAILED", "STOPPED") else EXIT_OK


def cmd_jobs_logs(args) -> int:
    # Where the log ends and why, on stderr (the log itself stays the output; a stopped job's log ended with its
    # last line, as a running one's does), and the exit as `jobs status` gives it: 1 for a job failed or stopped.
    if args.follow:
        status = jobs_api.follow_logs(args.job_id, args.address, write=lambda s: print(s, end="", flush=True))["status"]
    else:
        print(jobs_api.logs(args.job_id, args.address), end="", flush=True)
        status = jobs_api.job_info(args.job_id, args.address)["status"]
    print(f"--- job {args.job_id} {status}" + (": the log so far (--follow follows it)"
                                                 if status in ("PENDING", "RUNNING") else ""), file=sys.stderr)
    return EXIT_FAILED if status in ("FAILED", "STOPPED") else EXIT_OK


def cmd_jobs_stop(args) -> int:
    if jobs_api.stop(args.job_id, args.address):
        info = jobs_api.wait(args.job_id, args.address, timeout_s=args.timeout)
        _say(f"job {args.job_id}: {info['status']}")
        if info.get("resume"):
            # A search saves its state when stopped (a Ctrl-C for its driver, with 60 s: cluster.submit.STOP_ENV);
            # what it saved before, if it had to be killed.
            _say(f"its search continues from what it saved in {info.get('output')} with: {info['resume']}")
        return EXIT_OK
    # Ray's stop_job says False for a job that ended, and for one whose driver never started: a job left PENDING
    # (a log file name Ray could not make) was said to have "already ended", which `jobs status` denied.
    info = jobs_api.job_info(args.job_id, args.address)
    if info["status"] in ("SUCCEEDED", "FAILED", "STOPPED"):
        _say(f"job {args.job_id} had already ended: {info['status']}")
        return EXIT_OK
    print(f"job {args.job_id} is {info['status']}, and the cluster did not stop it: its driver may never have "
          f"started (trainyard jobs logs {args.job_id}; Ray's dashboard, or the head's job_manager.log, says why)",
          file=sys.stderr)
    return EXIT_FAILED


# ---------------------------------------------------------------------------------------------- parser

def _seconds(text: str) -> float:
    """A --timeout: a number of seconds above 0 (0 would give up before anything could happen)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _state_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", default=None,
                   help="where the local cluster's state lives (default: $TRAINYARD_STATE_DIR or ./.trainyard)")


def _address_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--address", default=None, help=what)


def register(subparsers, kit=None) -> None:
    """Add `cluster` and `jobs` (with their subcommands) to a `trainyard` argparse subparsers object. These
    commands need nothing from `kit`: they take their own --address and never read a spec."""
    cluster = subparsers.add_parser("cluster", help="a local multi-node Ray cluster: up, status, down")
    csub = cluster.add_subparsers(dest="cluster_command", required=True)

    p = csub.add_parser("up", help="start a head and N worker nodes on this machine (token auth, 127.0.0.1)")
    p.add_argument("--workers", type=int, default=1, help="worker nodes besides the head (default 1)")
    # 2, not 1: a Train worker and the Ray Data tasks feeding it must fit on a node at once.
    p.add_argument("--cpus-per-node", type=int, default=2, help="logical CPUs each node offers (default 2)")
    p.add_argument("--object-store-mb", type=int, default=local.DEFAULT_OBJECT_STORE_MB,
                   help=f"object store per node, MiB (default {local.DEFAULT_OBJECT_STORE_MB})")
    p.add_argument("--timeout", type=_seconds, default=180.0, help="seconds to wait for all nodes (default 180)")
    _state_dir_arg(p)
    p.set_defaults(func=cmd_cluster_up)

    p = csub.add_parser("status", help="the local cluster's address, token file, nodes and resources")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    _state_dir_arg(p)
    p.set_defaults(func=cmd_cluster_status)

    p = csub.add_parser("down", help="stop exactly the processes `cluster up` started")
    p.add_argument("--timeout", type=_seconds, default=30.0,
                   help="seconds to let Ray stop gracefully before SIGKILL (default 30)")
    _state_dir_arg(p)
    p.set_defaults(func=cmd_cluster_down)

    p = csub.add_parser("check-storage", help="check that every node reads and writes the same files at PATH")
    p.add_argument("path", help="a local path or a URI (s3://bucket/prefix, ...)")
    _address_arg(p, "the cluster (default: RAY_ADDRESS, else the cluster `trainyard cluster up` started, else "
                    "an embedded local Ray of one node)")
    p.add_argument("--timeout", type=_seconds, default=60.0, help="seconds to wait for every node (default 60)")
    p.set_defaults(func=cmd_cluster_check_storage)

    jobs = subparsers.add_parser("jobs", help="jobs on a cluster (Ray Jobs API): list, status, logs, stop")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)
    address_help = ("the cluster's dashboard, http://<head>:8265 (default: RAY_API_SERVER_ADDRESS or "
                    "RAY_ADDRESS if it is a URL, else the cluster `trainyard cluster up` started)")
    p = jsub.add_parser("list", help="every job the cluster knows, newest first")
    _address_arg(p, address_help)
    p.set_defaults(func=cmd_jobs_list)
    p = jsub.add_parser("status", help="a job's status and where its outputs land")
    p.add_argument("job_id")
    _address_arg(p, address_help)
    p.set_defaults(func=cmd_jobs_status)
    p = jsub.add_parser("logs", help="a job's driver logs")
    p.add_argument("job_id")
    p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    _address_arg(p, address_help)
    p.set_defaults(func=cmd_jobs_logs)
    p = jsub.add_parser("stop", help="stop a running job")
    p.add_argument("job_id")
    # Longer than the 60 s a stopped job's driver has to save a search (cluster.submit.STOP_ENV).
    p.add_argument("--timeout", type=_seconds, default=90.0, help="seconds to wait for it to stop (default 90)")
    _address_arg(p, address_help)
    p.set_defaults(func=cmd_jobs_stop)

