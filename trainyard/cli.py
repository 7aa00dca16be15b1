"""`trainyard` — one console script; each subcommand maps to a stage entry.

    trainyard validate SPEC            check a spec (exit 2 listing every problem)
    trainyard train SPEC               ingest → preprocess → train → evaluate → bundle
    trainyard run SPEC                 the whole job (tunes when the spec has a `tune` section)
    trainyard tune | serve | predict | monitor | evaluate | submit | cluster | jobs    (`trainyard CMD --help`)

Every command that reads a spec takes `--set FIELD=VALUE` (repeatable) to override a spec field, e.g.
`--set train.epochs=3`, and `--verbose` to see Ray's own log lines as well as trainyard's. Exit codes: 0 done,
1 failed while running, 2 bad input (spec, data, bundle, command).
"""
from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from cluster.errors import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, BadInput, Failure, TrainyardError,
                            root_cause)
from trainyard.display import Display, ShowVersion

# The packages that add subcommands, with the commands each adds, in the order `--help` lists them. A module
# that fails to import still has its commands registered: using one is an error naming the package and the
# fix, never an "invalid choice" (and the other packages' commands keep working).
COMMAND_MODULES = {"tuning.commands": ("tune",), "serving.commands": ("serve", "predict"),
                   "trainyard.submit": ("submit",), "trainyard.monitor": ("monitor",),
                   "trainyard.evaluate": ("evaluate",),
                   "cluster.commands": ("cluster", "jobs")}


# The running command's output: plain lines, or on a terminal the lines above a bar of epochs or trials.
_display = Display(live=False)


def err(msg: str) -> None:
    _display.close()             # the message goes under the bar as it stopped, not into it
    print(f"trainyard: error: {msg}", file=sys.stderr, flush=True)


def progress(msg: str) -> None:
    _display.line(msg)


def problem(msg: str) -> None:
    """A warning or error line from elsewhere (a worker's traceback): to stderr, above the bar if one is shown."""
    _display.error(msg)


def add_common(p: argparse.ArgumentParser, spec: bool = True) -> None:
    """The options of every command that runs a spec on Ray: SPEC, --set, --address, --verbose."""
    if spec:
        p.add_argument("spec", help="the job spec (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a spec field, e.g. --set train.epochs=3 (repeatable)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to use (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--verbose", action="store_true",
                   help="also print Ray's own log lines (its actors' output, Ray Data's progress), as Ray does")
    # Set by `trainyard submit`'s entrypoint, whose previous step ran the same storage check.
    p.add_argument("--storage-checked", action="store_true", help=argparse.SUPPRESS)


def load_spec(args) -> Any:
    from jobs.spec import load_spec as load
    return load(args.spec, args.set)


def connect(args, spec=None, *, imports: Sequence[str] = ()) -> dict:
    """Connect to Ray as the command asks (--address, RAY_ADDRESS, else embedded) and say what we got. With a
    spec on several nodes, check first that every node sees its data and shares its output. `imports`: modules
    the command needs next, imported while Ray starts (`import_meanwhile`).

    Unless --verbose, what Ray forwards from its other processes is filtered (`cluster.quiet`): the training
    workers' lines arrive here without Ray's prefix, Ray's actors' own lines stay in Ray's log files."""
    from cluster import connect as ray_connect, starts_embedded
    from cluster.quiet import WorkerOutputFilter, quiet_ray_logs

    address = getattr(args, "address", None)
    if spec is not None:
        check_local_data(spec, address)
    verbose = getattr(args, "verbose", False)
    if not verbose:
        quiet_ray_logs()
    if starts_embedded(address):
        # 4-7 s on 2 cores before the next line: say what is happening.
        progress("[ray] starting Ray on this machine (embedded: it stops when the command ends)")
    importing = import_meanwhile(imports)
    try:
        res = ray_connect(address)
    except TrainyardError:
        raise
    except Exception as exc:    # Ray's own, from deep inside ray.init (a start that timed out on a loaded host)
        from cluster.ray_compat import logs_folder
        raise Failure(f"cannot start or join Ray: {root_cause(exc)}; on a busy machine Ray's start can time out: "
                      f"run the command again (Ray's logs: {logs_folder()})") from exc
    importing.join()
    if not verbose:
        WorkerOutputFilter(line=progress, error=problem).route()
    progress(f"[ray] {res['nodes']} node(s), {res['CPU']:g} CPU, {res['GPU']:g} GPU")
    if res.get("released"):
        progress(f"[ray] gave back {res['released'][0]} placement group(s) ({res['released'][1]:g} CPU) held by jobs "
                 "that have ended (a job stopped as its training workers were being placed)")
    # A submitted job checked storage in its entrypoint (`python -m cluster.storage`) just before this.
    if spec is not None and res["nodes"] > 1 and not getattr(args, "storage_checked", False):
        _check_storage(spec, res["nodes"])
    return res


def check_local_data(spec, address) -> None:
    """With the embedded Ray the data is read on this machine: a `data.path` that finds nothing here is refused
    before Ray starts (a few seconds), as `trainyard validate` notes it. Joined to a cluster, its nodes read it."""
    from cluster.address import address_from
    from jobs import precheck
    from jobs.infer import DataError

    if address_from(address).kind == "local":
        note = precheck.local_data_note(spec.data)
        if note:
            raise DataError(note)


def import_meanwhile(modules: Sequence[str]) -> threading.Thread:
    """Import `modules` in a thread; join it before using them. Starting the embedded Ray mostly waits for its
    processes, and a training command then imports torch, pandas, Ray Train and our stages (~1.8 s on 2 cores):
    side by side, connect + those imports took 3.5-3.9 s instead of 5.4 s (3 runs each). A module that fails here
    is left out of sys.modules, so the command's own import raises its error where it is used."""
    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:     # raised again, in the main thread, by the import that needs it
                pass

    thread = threading.Thread(target=run, name="trainyard-imports", daemon=True)
    thread.start()
    return thread


def _check_storage(spec, nodes: int) -> None:
    """On several nodes, what `submit` checks inside the job: every node reads the data and shares the output
    (checkpoints, the bundle). A node-local path would otherwise fail the run half-way, deep inside Ray Train."""
    from cluster.storage import StorageError, as_read_here, check_job_storage

    output = as_read_here(spec.output_dir)
    try:
        data = [spec.data.path] if isinstance(spec.data.path, str) else spec.data.path
        check_job_storage(output, [as_read_here(path) for path in data])
    except StorageError as exc:
        raise BadInput(f"{exc}\n(data.path and output of {spec.name!r}; `trainyard cluster check-storage PATH` "
                       "checks a path on its own)", exit_code=exc.exit_code) from None
    progress(f"[storage] all {nodes} nodes see the data and share {output}")


def resume_command(args) -> str:
    """The command line that continues this run's tuning experiment: the same spec, overrides and cluster; in a
    job `trainyard submit` started, the submit that does (not this command, run in the job's copy of the repo)."""
    from cluster.submit import RESUME_ENV

    if os.environ.get(RESUME_ENV):
        return os.environ[RESUME_ENV]
    words = ["trainyard", args.command, args.spec]
    for item in args.set:
        words += ["--set", item]
    if getattr(args, "address", None):
        words += ["--address", args.address]
    if getattr(args, "no_serve", False):
        words.append("--no-serve")
    return shlex.join(words) + " --resume"


@dataclass(frozen=True)
class Kit:
    """What the composition root lends every package's `commands.register(subparsers, kit)`."""

    add_common: Callable[..., None]
    load_spec: Callable[[Any], Any]
    connect: Callable[..., dict]
    progress: Callable[[str], None]
    resume_command: Callable[[Any], str]
    check_before_ray: Callable[..., None]


# ---------------------------------------------------------------------------------------------- commands
def check_before_ray(spec, *, search: Optional[bool] = None, notes: Optional[list[str]] = None,
                     resume: bool = False) -> None:
    """What can be refused before Ray starts (seconds, not the half minute of a Ray start): a label or listed
    column the data's files lack, a search that cannot run, a metric the label cannot give (val_auc on a
    multiclass label, read from the label column alone), an encoder not found, an output folder this machine
    cannot write. Every problem at once (`jobs.precheck.refuse`). `search`: the spec's tune section is used
    (default: when it has one; `train` trains once). `notes`: `validate`'s list to add what the look at the data's
    values found to say to, and the output's problem (a spec for a cluster may name a folder only its nodes have).
    `resume`: `--resume` was given; no search of this spec to continue is a problem too (`tuning.resume.check`)."""
    from jobs import precheck
    from jobs.spec import SpecError

    searching = spec.tune is not None and search is not False
    # `train` of a spec with a search: its tune section is not used (and said so), so not checked either.
    trained = spec if searching or spec.tune is None else spec.model_copy(update={"tune": None})
    spec_problems, data_problems = precheck.problems(trained, metrics=not searching, notes=notes)
    if output := precheck.output_problem(spec.output_dir):
        if notes is None:
            spec_problems.append(output)
        else:
            notes.append(f"{output}. A run on this machine would stop there")
    if searching:
        from tuning import resume as RESUME, space
        try:
            space.check(spec)      # the tune checks, the metric's needs of the label included
        except SpecError as exc:
            spec_problems = exc.problems + spec_problems
        try:
            if resume:
                RESUME.check(spec)
        except SpecError as exc:
            spec_problems += exc.problems
        except BadInput as exc:
            spec_problems.append(str(exc))
    precheck.refuse(spec_problems, data_problems)


KIT = Kit(add_common=add_common, load_spec=load_spec, connect=connect, progress=progress,
          resume_command=resume_command, check_before_ray=check_before_ray)


def data_problems_alone(args) -> list[str]:
    """For `validate` of a spec with problems of its own: the data section's problems too (a label no file has,
    shards that disagree), when that section is valid by itself, so that every problem comes in one pass rather
    than the data's only once the rest is fixed."""
    from jobs import precheck
    from jobs.datafiles import DataError
    from jobs.spec import SpecError, apply_overrides, load_raw, validate_spec

    try:
        raw = apply_overrides(load_raw(args.spec), args.set or [])
    except Exception:           # noqa: BLE001 - what stops the reading is among the problems already said
        return []
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        return []               # not a mapping, or no data section of its own: nothing to check the data by
    data = None
    for sections in ({"data": raw.get("data"), "model": raw.get("model") or {}}, {"data": raw.get("data")}):
        try:                    # with the model section where it is valid too (a text job reads its text columns)
            data = validate_spec({"name": "validate", **sections})
            break
        except Exception:       # noqa: BLE001 - the sections' own problems are among those already said
            continue
    if data is None:
        return []
    try:
        precheck.check_columns(data)
    except DataError as exc:
        return str(exc).splitlines()
    except SpecError as exc:
        return exc.problems
    return []


def cmd_validate(args) -> int:
    from jobs.spec import SpecError
    try:
        spec = KIT.load_spec(args)
    except SpecError as exc:
        raise SpecError(exc.problems + data_problems_alone(args)) from None
    seen: list[str] = []
    check_before_ray(spec, notes=seen)
    from jobs import precheck
    print(f"{args.spec}: OK — job {spec.name!r}, output {spec.output_dir}")
    notes = [precheck.task_note(spec), *precheck.class_notes(spec), *seen]
    if spec.tune is not None:
        from tuning.space import metric_note
        notes.append(metric_note(spec))
    for note in notes:
        if note:
            print(f"note: {note}")
    note = precheck.local_data_note(spec.data)
    if note:
        # Not an error: `trainyard submit` sends a spec whose data only the cluster's nodes may see.
        print(f"note: {note}. A run on this machine would stop there; a job submitted to a cluster reads "
              "data.path on the cluster")
    return EXIT_OK


UNUSED_TUNE = ("[train] note: the spec's tune section is not used by train, which trains once with train.lr and "
               "train.batch_size; trainyard tune (or run) searches")


def cmd_train(args) -> int:
    from jobs import RUN_IMPORTS
    spec = KIT.load_spec(args)
    check_before_ray(spec, search=False)   # `train` trains once: a `tune` section is not used, so not checked either
    if spec.tune is not None:
        progress(UNUSED_TUNE)
    KIT.connect(args, spec, imports=RUN_IMPORTS)
    from jobs.pipeline import run_train
    path, _ = run_train(spec, progress=progress)
    from cluster.jobs_api import BUNDLE_WRITTEN
    print(f"{BUNDLE_WRITTEN}{path}", flush=True)
    return EXIT_OK


def cmd_run(args) -> int:
    """The whole job: tune when the spec has a `tune` section, else train; then serve unless --no-serve."""
    spec = KIT.load_spec(args)
    if args.resume and spec.tune is None:
        from jobs.spec import SpecError
        # A training run resumes only within itself (train.max_failures); starting one over is not resuming.
        raise SpecError(["--resume continues an interrupted tuning experiment, and this spec has no `tune` "
                         "section; drop --resume to train from the start"])
    # Before hours of training, not after: a serving layer that cannot load fails the command now.
    serving = None if args.no_serve else _import("serving")
    token = None
    if serving is not None:         # refused before training if empty; kept out of the embedded Ray's environment
        from serving.server import resolve_token              # (copied into every process it starts, replicas too)
        from serving.settings import TOKEN_ENV
        token = resolve_token(None)
        os.environ.pop(TOKEN_ENV, None)
    check_before_ray(spec, resume=args.resume)
    from jobs import RUN_IMPORTS
    from tuning import SEARCH_IMPORTS
    KIT.connect(args, spec, imports=SEARCH_IMPORTS if spec.tune is not None else RUN_IMPORTS)
    if spec.tune is not None:
        from tuning import run_tune
        path, _ = run_tune(spec, resume=args.resume, progress=progress, resume_command=resume_command(args))
    else:
        from jobs.pipeline import run_train
        path, _ = run_train(spec, progress=progress)
    from cluster.jobs_api import BUNDLE_WRITTEN
    print(f"{BUNDLE_WRITTEN}{path}", flush=True)
    if args.no_serve:
        return EXIT_OK
    return serving.serve_forever(path, spec=spec, token=token, progress=progress)


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        ours = (exc.name or "").split(".")[0] in ("cluster", "jobs", "tuning", "serving", "trainyard")
        fix = ("trainyard's own modules do not import: a broken checkout or a bug; `git status` shows local changes"
               if ours else "install trainyard with its dependencies (`make install`, or `pip install -e .` "
               "after the pinned torch)")
        raise CommandsUnavailable(f"the {name.split('.')[0]} package cannot load: {exc}. Fix: {fix}") from exc


class CommandsUnavailable(TrainyardError):
    """A package's commands failed to import (a missing or broken dependency): exit 1, naming the package."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="trainyard", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=ShowVersion)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a spec; exit 2 listing every problem")
    add_common(p)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("train", help="ingest → preprocess → train → evaluate → bundle")
    add_common(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("run", help="the whole job: train (or tune, when the spec has `tune`)")
    add_common(p)
    p.add_argument("--no-serve", action="store_true", help="do not serve the bundle afterwards")
    p.add_argument("--resume", action="store_true", help="continue an interrupted tuning experiment")
    p.set_defaults(func=cmd_run)
    for name, commands in COMMAND_MODULES.items():
        try:
            module = _import(name)
        except CommandsUnavailable as exc:
            _register_unavailable(sub, commands, exc)
            continue
        module.register(sub, KIT)
    return ap


def _register_unavailable(sub, commands: tuple[str, ...], problem: CommandsUnavailable) -> None:
    """Commands whose package failed to import: listed as usual, and an error with the reason when used."""
    def unavailable(args) -> int:
        raise problem
    for command in commands:
        # No option prefix: every word after the command (its options included) is taken, none refused.
        p = sub.add_parser(command, help=f"(unavailable: {problem})", add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs="*")
        p.set_defaults(func=unavailable)


def _report(exc: TrainyardError, args: Optional[argparse.Namespace]) -> None:
    from jobs.spec import SpecError
    if isinstance(exc, SpecError):
        # Problems found after loading (against the data, the cluster, a resumed experiment) name the field;
        # the file is named here, with the `--set` fields a problem names.
        from jobs.spec.errors import overridden_paths, source_of

        source = getattr(args, "spec", None)
        named = (f"{source}:", f"{source} /", f"{Path(source)}:", f"{source} with --set", "--set") if source else ()
        overridden = overridden_paths(getattr(args, "set", None) or [])
        problems = [p if not source or p.startswith(named) else f"{source_of(p, source, overridden)}: {p}"
                    for p in exc.problems]
        err(f"the spec has {len(problems)} problem(s):\n{SpecError(problems)}")
    else:
        err(str(exc))


def _check_set_spacing(argv: list[str]) -> None:
    """`--set train.epochs = 3` (spaces around '='): argparse said only "unrecognized arguments: = 3"."""
    for i, word in enumerate(argv[:-2]):
        if word == "--set" and "=" not in argv[i + 1] and argv[i + 2].startswith("="):
            value = argv[i + 2][1:] or (argv[i + 3] if i + 3 < len(argv) else "VALUE")
            raise BadInput(f"--set {argv[i + 1]} {argv[i + 2]}...: write FIELD=VALUE as one word, without spaces: "
                           f"--set {argv[i + 1]}={value}")


def main(argv: Optional[list[str]] = None) -> int:
    """Run one command; every trainyard error becomes one message and its exit code, here and only here."""
    global _display
    args = None
    _display = Display()
    try:
        _check_set_spacing(sys.argv[1:] if argv is None else argv)
        args = build_parser().parse_args(argv)
        return args.func(args)
    except TrainyardError as exc:
        _report(exc, args)
        return exc.exit_code
    except KeyboardInterrupt:
        if quiet := sys.modules.get("cluster.quiet"):     # not imported: no Ray, nothing of it routed here
            quiet.mute_workers()
        err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:
        if not _stdout_reader_gone():           # a connection of the command's own (a server, the cluster)
            err(f"a connection was closed by the other end: {exc}")
            return EXIT_FAILED
        # The reader went away (`trainyard jobs logs ID --follow | head`): end as a process that SIGPIPE ends
        # (a shell says 128 + 13), without a traceback, then or at exit's flush of stdout.
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    finally:
        try:
            _display.close()
        except BrokenPipeError:
            _stdout_to_devnull()


EXIT_BROKEN_PIPE = 141


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (poll says POLLERR on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):     # no fileno (captured), no poll (Windows)
        return False


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run() -> int:
    """The `trainyard` console script and `python -m trainyard`: `main`, then a quicker exit of the process.

    Garbage the command left is collected now (its finalizers run, files in reference cycles among it are closed),
    and everything still alive (torch's, Ray's and pandas' modules, the run's data) is moved out of the garbage
    collector's reach (`gc.freeze`), so that the interpreter's last collections at exit do not walk it again:
    from a `trainyard train`'s last line to its exit 2.3-2.5 s instead of 3.1-3.4 s on 2 cores (Python alone,
    importing torch, Ray Train, Ray Data and pandas: 3.5 s from start to exit, 3.0 s with the collect and the
    freeze). Every exit handler still runs (Ray's shutdown among them). Only for a process that ends here:
    `main` alone, called in a long-lived process (the tests), leaves the collector as it is."""
    import gc

    code = main()
    connection = sys.modules.get("cluster.connection")
    if code == EXIT_OK and connection is not None and connection.is_embedded():
        # The work is done (a bundle written): a Ctrl-C from here on is told, not raised. It landed in the collect
        # below as often as in Ray's stop at exit ("Exception ignored in: <function WeakSet...>", a traceback).
        connection.tell_ctrl_c()
    gc.collect()
    # Frozen objects are never collected again: a reference cycle among them that holds a resource (an open
    # file, a socket) is not finalized at exit. None of the commands leaves one after the collect above; a
    # command that does must close it in `main`, as every command does its files and Ray connections now.
    gc.freeze()
    return code


__all__ = ["main", "run", "build_parser", "Kit", "KIT", "EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT"]

if __name__ == "__main__":
    sys.exit(run())
