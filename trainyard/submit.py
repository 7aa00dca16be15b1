"""`trainyard submit SPEC --address URL`: run a job spec on a Ray cluster through the Ray Jobs API.

The submission itself (what ships, which paths the cluster can read, the job's entrypoint) is
``cluster.submit``; this module reads the spec for it with the spec's own reader and ``--set`` parser, and hands
it the spec's YAML writer for the staged copy, since ``cluster`` imports nothing of ours.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Callable

from cluster import jobs_api, submit as submission
from cluster.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from cluster.submit import MODES, SHARED_ENV, UPLOAD_LIMIT_MB, Plan, SubmitError
from jobs.spec import SpecError, apply_overrides, load_raw, load_spec, write_yaml


def read_spec(spec_path, overrides=(), mode: str = "run", resume: bool = False) -> dict:
    """The spec file as the spec's reader reads it, with ``--set`` applied the way `trainyard run` does, and
    validated as `trainyard validate` does, blaming the file or `--set` (a spec that can never run was sent, and
    failed on the cluster blaming the staged copy `.trainyard-job/spec.yaml`). The data is not read here: the
    cluster's nodes read it. Problems reading the file are a SubmitError, as for the rest of submit."""
    try:
        raw = load_raw(spec_path)
        if isinstance(raw, dict):
            apply_overrides(raw, list(overrides))
    except SpecError as exc:
        raise SubmitError("; ".join(exc.problems)) from None
    spec = load_spec(spec_path, list(overrides))
    if mode == "tune" and spec.tune is None:
        raise SpecError([f"--mode tune: the spec has no `tune` section, so there is nothing to search; add one "
                         "or submit with --mode train"])
    if resume and spec.tune is None:
        raise SpecError(["--resume continues a stopped search, and the spec has no `tune` section; drop --resume "
                         "to train from the start"])
    return raw


def resume_command(spec_path, address: str | None, mode: str, overrides=(), shared=(), env=(), allow_files=(),
                   max_upload_mb: float | None = None) -> str:
    """The `trainyard submit` that continues the search this submission starts: the same spec, options and
    cluster. It goes into the job's metadata and environment, so no secret goes with it: --env by name only,
    the address without user:password@ or a query."""
    from urllib.parse import urlsplit, urlunsplit

    words = ["trainyard", "submit", str(spec_path), "--mode", mode]
    for flag, items in (("--set", overrides), ("--shared", shared), ("--env", [e.split("=", 1)[0] for e in env]),
                        ("--allow-file", allow_files)):
        for item in items:
            words += [flag, item]
    if max_upload_mb is not None and max_upload_mb != UPLOAD_LIMIT_MB:
        words += ["--max-upload-mb", f"{max_upload_mb:g}"]
    if address:
        parts = urlsplit(address)
        if parts.scheme and parts.netloc:
            address = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        words += ["--address", address]
    return shlex.join(words) + " --resume"


def plan(spec_path, address: str | None, mode: str = "run", overrides=(), resume: bool = False,
         **options) -> Plan:
    """``cluster.submit.plan`` for a spec file: what `trainyard submit` would send, nothing contacted."""
    raw = read_spec(spec_path, overrides, mode, resume)
    searches = mode != "train" and isinstance(raw, dict) and raw.get("tune") is not None     # `tune: {}` searches
    again = resume_command(spec_path, address, mode, overrides, options.get("shared", ()), options.get("env", ()),
                           options.get("allow_files", ()), options.get("max_upload_mb")) if searches else None
    return submission.plan(Path(spec_path), raw, address, mode, resume=resume, resume_command=again,
                           overrides=overrides, **options)


def submit(spec_path, address: str | None, mode: str = "run", wait: bool = False, overrides=(), *,
           entrypoint: str | None = None, progress: Callable[[str], None] = print, resume: bool = False,
           **options) -> dict:
    """Plan and submit a spec file; returns the job's info (final, with ``wait``). ``options``: plan()'s."""
    the_plan = plan(spec_path, address, mode, overrides, resume, **options)
    return submission.submit(the_plan, address, write_yaml, wait=wait, entrypoint=entrypoint, progress=progress)


def check_data_here(the_plan: Plan, check_before_ray: Callable, resume: bool = False) -> None:
    """When the cluster runs on this machine, and so reads the data and the model cache from its disk, what
    `trainyard validate` finds is refused here, before anything is sent: a misspelt label was uploaded and
    failed on the cluster 15 s later. Another cluster (`--shared` paths included) is left to check for itself:
    its nodes may hold what this machine lacks (a Hugging Face encoder in their cache, credentials). `resume`:
    --resume, whose search must be in the output with the same spec (a changed spec was uploaded, then refused
    on the cluster, naming the job's copy of the spec rather than the user's file)."""
    from jobs.spec import validate_spec

    paths = the_plan.spec["data"]["path"]
    spec = validate_spec(the_plan.spec)
    if not the_plan.same_machine or any("://" in str(p) for p in (paths if isinstance(paths, list) else [paths])):
        if the_plan.mode != "train" and spec.tune is not None:
            from jobs.spec import SpecError
            from tuning import space
            if problem := space.output_problem(spec):      # needs nothing of this machine (not its optuna)
                raise SpecError([problem])
        return
    check_before_ray(spec, search=the_plan.mode != "train", resume=resume)
    _check_fits_recorded_cluster(the_plan, spec)


def _check_fits_recorded_cluster(the_plan: Plan, spec) -> None:
    """A run or a search too big for the `cluster up` cluster it goes to (its size is recorded here) is refused
    before the upload: it was refused on the cluster, after the upload and 27 s of checks there."""
    from cluster import local
    from cluster.state import read_state
    from jobs.fits import check_resources, resolve_use_gpu

    recorded = read_state()
    if not recorded or recorded.get("dashboard_url") != the_plan.url:
        return
    # The nodes alive now, as its GCS sees them (nodes added by hand with `ray start` too), not those `up` started
    live = local.status()
    if live["error"] or not live["nodes"]:
        return          # its GCS does not answer: the submission will say so
    resources = {k: sum(float(n["resources"].get(k, 0.0)) for n in live["nodes"]) for k in ("CPU", "GPU")}
    check_resources(spec, resources)
    use_gpu = resolve_use_gpu(spec.train.use_gpu, spec.train.workers, resources)
    if the_plan.mode != "train" and spec.tune is not None:
        from tuning.plan import plan as search_plan
        search_plan(spec, resources, use_gpu=use_gpu)


def register(subparsers, kit) -> None:
    """Add `submit` to the `trainyard` subcommands."""
    def cmd_submit(args) -> int:
        options = dict(shared=args.shared, env=args.env, allow_files=args.allow_file, max_upload_mb=args.max_upload_mb)
        for item in args.env:
            name = item.split("=", 1)[0]
            if "=" in item and name.isidentifier():     # `export 1BAD=...` is no shell: `plan` refuses the name
                kit.progress(f"note: --env {name}=... puts its value in this command's arguments, which `ps` "
                             f"shows to every user of this machine; `export {name}=...` and pass --env {name}")
        the_plan = plan(args.spec, args.address, args.mode, args.set, args.resume, **options)
        check_data_here(the_plan, kit.check_before_ray, args.resume)
        if args.dry_run:
            for line in submission.describe(the_plan, every_file=True):
                kit.progress(line)
            kit.progress("dry run: nothing was sent")
            return EXIT_OK
        info = submission.submit(the_plan, args.address, write_yaml, wait=args.wait, progress=kit.progress)
        if args.wait:
            if info["status"] == "SUCCEEDED":
                return EXIT_OK
            # The job's own exit code where it says the spec or data was refused (2): bad input, not a failure.
            return EXIT_BAD_INPUT if jobs_api.exit_code(info) == EXIT_BAD_INPUT else EXIT_FAILED
        return EXIT_OK

    p = subparsers.add_parser("submit", help="run a spec on a Ray cluster through the Ray Jobs API",
                              description=submission.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Not kit.add_common: here --address is the dashboard (Jobs API), not a cluster to run a driver on.
    p.add_argument("spec", help="the job spec (YAML)")
    p.add_argument("--address", default=None,
                   help="the cluster's dashboard, http://<head>:8265 (default: RAY_API_SERVER_ADDRESS or "
                        "RAY_ADDRESS if it is a URL, else the cluster `trainyard cluster up` started)")
    p.add_argument("--mode", choices=MODES, default="run",
                   help="what the job runs: `trainyard run SPEC --no-serve` (default), train or tune")
    p.add_argument("--wait", action="store_true", help="stream the job's logs and exit with its outcome")
    p.add_argument("--resume", action="store_true",
                   help="continue the search a stopped job of this spec saved in its output (`trainyard jobs "
                        "stop` prints this command); --mode tune or run, the same spec and --set options")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a spec field, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--shared", action="append", default=[], metavar="PREFIX",
                   help=f"a local path prefix every node mounts (repeatable; also {SHARED_ENV})")
    p.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="an environment variable for the job (repeatable): NAME takes its value from this "
                        "environment, so that secrets stay out of process arguments; NAME=VALUE as given")
    p.add_argument("--allow-file", action="append", default=[], metavar="PATTERN",
                   help="upload files that look like secrets (.env*, *.pem, *.key, id_rsa*, .aws/, credentials*, "
                        "...) when they match PATTERN (.gitignore syntax; repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="list every file that would be uploaded, the job's entrypoint and environment variable "
                        "names, and stop: nothing is sent")
    p.add_argument("--max-upload-mb", type=float, default=UPLOAD_LIMIT_MB,
                   help=f"refuse a working_dir bigger than this (default {UPLOAD_LIMIT_MB}, Ray's limit)")
    p.set_defaults(func=cmd_submit)
