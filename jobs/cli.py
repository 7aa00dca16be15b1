"""`trainyard` — one console script; each subcommand maps to a stage entry.

    trainyard validate SPEC            check a spec (exit 2 listing every problem)
    trainyard train SPEC               ingest → preprocess → train → evaluate → bundle
    trainyard run SPEC                 the whole job (tunes when the spec has a `tune` section)

Every command takes `--set FIELD=VALUE` (repeatable) to override a spec field, e.g. `--set train.epochs=3`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _err(msg: str) -> None:
    print(f"trainyard: error: {msg}", file=sys.stderr, flush=True)


def _progress(msg: str) -> None:
    print(msg, flush=True)


def _quiet_ray() -> None:
    """Keep our own progress lines readable: Ray Data's per-dataset banners go to its log files only."""
    try:
        import ray.data  # configures its loggers on import: quiet them after, not before
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except Exception:  # a Ray without these knobs is only noisier
        pass
    for name in ("ray.data", "ray.train", "ray.tune", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Progress bars disabled": we turned them off above, on purpose.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _load(args) -> "JobSpec":  # noqa: F821
    from jobs.spec import load_spec
    return load_spec(args.spec, args.set)


def _connect(args, spec=None) -> dict:
    from cluster import connect
    _quiet_ray()
    res = connect(getattr(args, "address", None))
    _progress(f"[ray] {res['nodes']} node(s), {res['CPU']:g} CPU, {res['GPU']:g} GPU")
    # A submitted job checked storage in its entrypoint (`python -m cluster.storage`) just before this.
    if spec is not None and res["nodes"] > 1 and not getattr(args, "storage_checked", False):
        _check_storage(spec, res["nodes"])
    return res


def _check_storage(spec, nodes: int) -> None:
    """On several nodes, what `submit` checks inside the job: every node reads the data and shares the output
    (checkpoints, the bundle). A node-local path would otherwise fail the run half-way, deep inside Ray Train."""
    from cluster.storage import StorageError, check_job_storage, is_uri
    from jobs.ingest import DataError

    def resolved(path: str) -> str:
        """As this driver resolves it: a relative path against the directory trainyard runs in."""
        return path if is_uri(path) or path.startswith("file://") else os.path.abspath(os.path.expanduser(path))

    output = resolved(spec.output_dir)
    try:
        data = [spec.data.path] if isinstance(spec.data.path, str) else spec.data.path
        check_job_storage(output, [resolved(path) for path in data])
    except StorageError as exc:
        raise DataError(f"{exc}\n(data.path and output of {spec.name!r}; `trainyard cluster check-storage PATH` "
                        "checks a path on its own)") from None
    _progress(f"[storage] all {nodes} nodes see the data and share {output}")


def resume_command(args) -> str:
    """The command line that continues this run's tuning experiment: the same spec, overrides and cluster."""
    import shlex
    words = ["trainyard", args.command, args.spec]
    for item in args.set:
        words += ["--set", item]
    if getattr(args, "address", None):
        words += ["--address", args.address]
    if getattr(args, "no_serve", False):
        words.append("--no-serve")
    return shlex.join(words) + " --resume"


def cmd_validate(args) -> int:
    spec = _load(args)
    if spec.tune is not None:
        from tuning import space
        space.check(spec)      # what `trainyard tune` checks before it reads any data
    print(f"{args.spec}: OK — job {spec.name!r}, output {spec.output_dir}")
    return EXIT_OK


def cmd_train(args) -> int:
    from jobs.pipeline import run_train
    spec = _load(args)
    _connect(args, spec)
    path, _ = run_train(spec, progress=_progress)
    print(f"bundle written to {path}")
    return EXIT_OK


def cmd_run(args) -> int:
    """The whole job: tune when the spec has a `tune` section, else train; then serve unless --no-serve."""
    spec = _load(args)
    _connect(args, spec)
    if spec.tune is not None:
        from tuning import run_tune
        path, _ = run_tune(spec, resume=getattr(args, "resume", False), progress=_progress,
                           resume_command=resume_command(args))
    else:
        from jobs.pipeline import run_train
        path, _ = run_train(spec, progress=_progress)
    print(f"bundle written to {path}")
    if args.no_serve:
        return EXIT_OK
    try:
        from serving import serve_forever
    except ImportError:
        return EXIT_OK
    return serve_forever(path, spec=spec, progress=_progress)


def _add_common(p: argparse.ArgumentParser, spec: bool = True) -> None:
    if spec:
        p.add_argument("spec", help="the job spec (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a spec field, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to use (default: RAY_ADDRESS, else an embedded local Ray)")
    # Set by `trainyard submit`'s entrypoint, whose previous step ran the same storage check.
    p.add_argument("--storage-checked", action="store_true", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="trainyard", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a spec; exit 2 listing every problem")
    _add_common(p)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("train", help="ingest → preprocess → train → evaluate → bundle")
    _add_common(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("run", help="the whole job: train (or tune, when the spec has `tune`)")
    _add_common(p)
    p.add_argument("--no-serve", action="store_true", help="do not serve the bundle afterwards")
    p.add_argument("--resume", action="store_true", help="continue an interrupted tuning experiment")
    p.set_defaults(func=cmd_run)
    # Each package contributes its own subcommands through `register(subparsers)`.
    for module in ("tuning.commands", "serving.commands", "cluster.commands", "jobs.submit"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue
        if hasattr(mod, "register"):
            mod.register(sub)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    from jobs.bundle import BundleError
    from jobs.ingest import DataError
    from jobs.spec import SpecError
    from jobs.train import TrainError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as exc:
        # Problems found after loading (against the data, the cluster, a resumed experiment) name the field;
        # the file is named here.
        source = getattr(args, "spec", None)
        named = (f"{source}:", f"{source} /", f"{Path(source)}:", "--set") if source else ()
        problems = [p if not source or p.startswith(named) else f"{source}: {p}" for p in exc.problems]
        _err(f"the spec has {len(problems)} problem(s):\n{SpecError(problems)}")
        return EXIT_BAD_INPUT
    except (DataError, BundleError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except TrainError as exc:
        # What the spec asks of this cluster or command (a search that cannot fit, --resume with nothing to
        # resume) is bad input; the rest failed while running.
        _err(str(exc))
        return EXIT_BAD_INPUT if getattr(exc, "bad_input", False) else EXIT_FAILED
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
