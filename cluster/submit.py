"""Submission: run a job spec on a Ray cluster through the Ray Jobs API (`trainyard submit SPEC --address URL`).

What is shipped: trainyard's own repository (the one this command runs from, whatever folder you are in) as the
job's ``working_dir`` — the files git would commit (tracked, plus
untracked ones .gitignore does not ignore), never ``.git``, virtualenvs, ``runs/``, ``data/``, ``bundles/``,
``logs/``, ``monitor/``, ``tests/`` or caches — plus the spec as resolved here (``--set`` applied, paths settled) at ``.trainyard-job/spec.yaml``.
The files are copied into a staging folder first, so what is measured against the upload limit is exactly
what is uploaded. Files that usually hold secrets (``SECRET_PATTERNS``: ``.env*``, ``*.pem``, ``*.key``,
``id_rsa*``, ``.aws/``, ``credentials*``, ...) are refused, naming them, unless allowed with ``--allow-file
PATTERN``; `submit` says what it sends (count, size, the largest files) and ``--dry-run`` lists every file and
stops there.

Environment variables for the job (``--env NAME``, the value taken from this environment, or ``--env
NAME=VALUE``) travel in the job's ``runtime_env``, never in its entrypoint: no process on the cluster carries
them in its command line.

What is not shipped: trainyard's dependencies. The job's entrypoint, run by the cluster's ``python``, is

    python -m cluster.envcheck && python -m cluster.storage OUTPUT --data DATA \
        && python -m trainyard run .trainyard-job/spec.yaml --storage-checked --no-serve

so the cluster must have trainyard's dependencies installed (a local `trainyard cluster up` cluster runs this
venv's python; on Kubernetes or the cloud, an image with ``pip install .``). ``cluster.envcheck`` fails the
job in its first second, naming what is missing, when they are not; ``cluster.storage`` fails it when some
node cannot see the data or share the output, naming the nodes — before any training starts.

Paths in the spec are read on the cluster, not here. A cluster on this machine (127.0.0.1) sees this disk:
relative ``data.path``/``output`` are made absolute. Any other cluster does not: local paths are refused
unless they lie under a ``--shared`` prefix that every node mounts; URIs (s3://, gs://, ...) always pass.
"""
# The spec's format is not ours to know here (cluster/ imports nothing of ours): the caller reads the spec file
# and applies `--set` (`plan` takes the result as a plain dict), and passes the spec's YAML writer to `submit`,
# which stages the resolved spec with it so that the job reads back the same values.
from __future__ import annotations

import copy
import glob
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pathspec

from cluster import jobs_api
from cluster.address import parse_address
from cluster.dashboard import dashboard_url, job_client
from cluster.errors import BadInput
from cluster.storage import is_uri

REPO_ROOT = Path(__file__).resolve().parents[1]
# The Ray dashboard refuses request bodies over 100 MiB (ray_constants.DASHBOARD_CLIENT_MAX_SIZE), and the
# working_dir travels as one. Its error then is a bare HTTP 413; ours comes before any upload.
UPLOAD_LIMIT_MB = 100
SPEC_IN_JOB = ".trainyard-job/spec.yaml"
SHARED_ENV = "TRAINYARD_SHARED_PATHS"
# Never shipped, even when tracked by git: at any depth...
EXCLUDED_DIR_NAMES = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                      ".trainyard", ".ipynb_checkpoints", "node_modules"}
# ...and at the top of the repository: run outputs, data, bundles, the README's prediction logs and monitor
# reports (served traffic: never uploaded by accident), build artifacts, and the tests (never run by a job;
# their fixture schemas alone are megabytes).
EXCLUDED_TOP_LEVEL = {"runs", "data", "bundles", "logs", "monitor", "ray_results", ".whl", "build", "dist", "tests"}
MODES = ("run", "train", "tune")
# `trainyard jobs stop` (the Jobs API's stop) sends the job's processes SIGTERM and SIGKILLs them 3 s later: a
# search's driver died printing Ray's own SIGTERM stack dump, its state unsaved. The job supervisor reads these
# from the job's runtime_env: SIGINT, a Ctrl-C, which a search answers by saving its state for --resume (and a
# training run by stopping), with time to do it.
STOP_ENV = {"RAY_JOB_STOP_SIGNAL": "SIGINT", "RAY_JOB_STOP_WAIT_TIME_S": "60"}
# The command that continues a submitted search, in the job's environment (its driver says it when stopped) and
# metadata (`trainyard jobs stop` says it).
RESUME_ENV = "TRAINYARD_RESUME_COMMAND"
# Files that usually hold credentials, as .gitignore patterns (at any depth; a trailing / is a folder): never
# uploaded by accident, only when a --allow-file pattern names them.
SECRET_PATTERNS = (".env*", "*.pem", "*.key", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", ".aws/", ".ssh/",
                   "credentials*", ".netrc", ".git-credentials", "*.p12", "*.pfx",
                   # A serve token (the README's `openssl rand ... > serve-token`), registry and cluster logins,
                   # cloud service-account keys, package-index passwords, Terraform variables, secrets manifests.
                   "token", "token.*", "*-token", "*_token", "*-token.*", "*_token.*", ".docker/", ".kube/", "kubeconfig*", ".config/gcloud/", "*service-account*.json",
                   "*-sa.json", ".npmrc", ".pypirc", ".htpasswd", "*.tfvars", "secrets.y*ml", "*secret*.json")
_SHOWN_LARGEST = 5


class SubmitError(BadInput):
    """The submission was refused before anything was uploaded; the message says what and how to fix it."""


@dataclass
class Plan:
    """Everything `submit` will send, decided without touching the cluster (so it is testable and printable)."""

    spec_path: Path
    spec: dict
    mode: str
    entrypoint: str
    submission_id: str
    output: str
    files: list[tuple[str, int]]                # (path relative to the repository, bytes)
    env_vars: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    root: Path = REPO_ROOT                       # where ``files`` are read from
    resume_command: str | None = None            # how to continue the search it runs (None: no search)
    same_machine: bool = False                   # the cluster runs on this machine (its dashboard is loopback)
    overrides: tuple[str, ...] = ()              # the --set FIELD=VALUE it was given, said by `jobs list`
    url: str = ""                                # the cluster's dashboard, where it goes

    @property
    def upload_bytes(self) -> int:
        return sum(size for _, size in self.files)

    @property
    def metadata(self) -> dict[str, str]:
        return {jobs_api.METADATA_SPEC: str(self.spec_path), jobs_api.METADATA_MODE: self.mode,
                jobs_api.METADATA_OUTPUT: self.output,
                **({jobs_api.METADATA_RESUME: self.resume_command} if self.resume_command else {}),
                **({jobs_api.METADATA_SET: " ".join(f"--set {shlex.quote(o)}" for o in self.overrides)}
                   if self.overrides else {})}


# ---------------------------------------------------------------------------------------------- spec

def _check_spec(spec_path: Path, raw_spec) -> dict:
    """The spec as read (``--set`` applied), copied: plan() settles its paths in place."""
    if not isinstance(raw_spec, dict):
        raise SubmitError(f"{spec_path}: a job spec is a YAML mapping (name:, data:, model:, train:, output:)")
    data = raw_spec.get("data")
    if not isinstance(data, dict) or not data.get("path"):
        raise SubmitError(f"{spec_path}: data.path is missing; the job needs to know where its data is")
    if not raw_spec.get("name"):
        raise SubmitError(f"{spec_path}: name is missing")
    return copy.deepcopy(raw_spec)


def _settle_path(value: str, field_name: str, spec_path: Path, same_machine: bool, shared: list[str],
                 url: str, must_exist: bool, notes: list[str]) -> str:
    """The path as the cluster should read it, or a SubmitError saying why the cluster cannot."""
    if is_uri(value):
        return value
    local = value[len("file://"):] if value.startswith("file://") else value
    absolute = os.path.abspath(os.path.expanduser(local))
    if same_machine:
        if must_exist and not (glob.glob(absolute) if glob.has_magic(absolute) else os.path.exists(absolute)):
            raise SubmitError(f"{spec_path}: {field_name} {value!r} does not exist here ({absolute}); "
                              "create the data first, or fix the path")
        if absolute != local:
            # The job runs in a copy of the repository elsewhere on disk: a relative path would point there.
            notes.append(f"{field_name}: {value!r} -> {absolute} (the job runs in another directory)")
        return absolute
    prefixes = [os.path.abspath(p).rstrip("/") + "/" for p in shared]
    if any((absolute + "/").startswith(p) for p in prefixes):
        if absolute != local:
            # A relative path under a --shared prefix was refused with the advice to use --shared.
            notes.append(f"{field_name}: {value!r} -> {absolute} (under --shared; the job runs in another directory)")
        return absolute
    raise SubmitError(
        f"{spec_path}: {field_name} {value!r} is a path on this machine, and the cluster at {url} cannot read "
        "this machine's disk. Put it where every node can reach it and point the spec there: a URI "
        f"(--set {field_name}=s3://bucket/prefix), or an absolute path on storage every node mounts, declared "
        f"with --shared /mnt/shared (or {SHARED_ENV}=/mnt/shared)")


# ---------------------------------------------------------------------------------------------- files

def repository_files(root: Path = REPO_ROOT) -> list[tuple[str, int]]:
    """(relative path, size) of every file that would ship from ``root``."""
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True).stdout
        candidates = [p for p in listed.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        candidates = _walk_without_git(root)
    files = []
    for rel in candidates:
        parts = Path(rel).parts
        if parts[0] in EXCLUDED_TOP_LEVEL or any(p in EXCLUDED_DIR_NAMES or p.endswith(".egg-info")
                                                 for p in parts[:-1]):
            continue
        if parts[-1] == ".gitignore":
            # Ray applies a working_dir's .gitignore again on upload; the selection is already made here,
            # and a pattern like `*.yaml` there would silently drop the resolved spec.
            continue
        path = root / rel
        if path.is_file() and not path.is_symlink():  # a tracked file deleted from the worktree is skipped
            files.append((rel, path.stat().st_size))
    return sorted(files)


def _walk_without_git(root: Path) -> list[str]:
    """Not a git checkout (an unpacked tarball): walk it, honouring its top-level .gitignore as Ray would."""
    ignore = None
    gitignore = root / ".gitignore"
    if gitignore.is_file():
        # Git's own rules (GitIgnoreSpec: a later `!pattern` re-includes, as in git), which is also how Ray
        # reads a working_dir's .gitignore.
        ignore = pathspec.GitIgnoreSpec.from_lines(gitignore.read_text().splitlines())
    found = []
    for folder, dirs, names in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if d not in EXCLUDED_DIR_NAMES
                   and not (ignore and ignore.match_file(str(rel_folder / d) + "/"))]
        found += [str(rel_folder / n) for n in names if not (ignore and ignore.match_file(str(rel_folder / n)))]
    return found


def _human(size: int) -> str:
    if size >= 2**20:
        return f"{size / 2**20:.1f} MiB"
    return f"{size / 2**10:.1f} KiB" if size >= 2**10 else f"{size} B"


def _refuse_secrets(files: list[tuple[str, int]], allowed: list[str], root: Path) -> None:
    """A SubmitError naming every file that looks like a secret and that no ``--allow-file`` pattern allows."""
    secret = pathspec.GitIgnoreSpec.from_lines(SECRET_PATTERNS)
    allow = pathspec.GitIgnoreSpec.from_lines(allowed)
    found = [rel for rel, _ in files if secret.match_file(rel) and not allow.match_file(rel)]
    if not found:
        return
    raise SubmitError(
        f"refusing to upload {len(found)} file(s) from {root} that usually hold secrets (nothing was uploaded): "
        + ", ".join(found) + ". Keep them out of the upload (list them in .gitignore, or move them out of the "
        "repository; pass credentials to the job with --env NAME), or ship them on purpose with --allow-file "
        "PATTERN (repeatable; .gitignore syntax), e.g. "
        + " ".join(f"--allow-file {shlex.quote(rel)}" for rel in found[:3]))


def _check_size(files: list[tuple[str, int]], limit_mb: float, root: Path) -> None:
    total = sum(size for _, size in files)
    if total <= limit_mb * 2**20:
        return
    by_dir: dict[str, int] = {}
    for rel, size in files:
        parts = Path(rel).parts
        for depth in range(1, min(len(parts), 3)):
            key = "/".join(parts[:depth]) + "/"
            by_dir[key] = by_dir.get(key, 0) + size
    biggest_files = _largest(files)
    biggest_dirs = sorted(by_dir.items(), key=lambda d: -d[1])[:_SHOWN_LARGEST]
    raise SubmitError(
        f"the working_dir to upload ({root}) holds {_human(total)} in {len(files)} files, over the "
        f"{limit_mb:g} MiB a Ray job can upload (nothing was uploaded). Biggest files: "
        + ", ".join(f"{rel} ({_human(size)})" for rel, size in biggest_files)
        + ". Biggest folders: " + ", ".join(f"{d} ({_human(size)})" for d, size in biggest_dirs)
        + ". Move data and checkpoints out of the repository (or into data/ or runs/, which never ship), "
          "or list them in .gitignore; put data the job reads on shared storage or a URI.")


def _largest(files: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(files, key=lambda f: (-f[1], f[0]))[:_SHOWN_LARGEST]


def describe(the_plan: Plan, every_file: bool = False) -> list[str]:
    """What `submit` sends, as lines to print: the files (a summary, or ``every_file``), the environment
    variables' names (never their values) and the entrypoint."""
    files = the_plan.files
    lines = [f"upload: {len(files)} files, {_human(the_plan.upload_bytes)}, from {the_plan.root}"
             f" (and the resolved spec as {SPEC_IN_JOB})"]
    if every_file:
        width = max((len(rel) for rel, _ in files), default=0)
        lines += [f"  {rel:<{width}}  {_human(size):>10}" for rel, size in files]
    elif files:
        lines.append("  largest: " + ", ".join(f"{rel} ({_human(size)})" for rel, size in _largest(files))
                     + ("; `trainyard submit --dry-run` lists every file" if len(files) > _SHOWN_LARGEST else ""))
    if the_plan.env_vars:
        lines.append("job environment (values not shown): " + ", ".join(sorted(the_plan.env_vars)))
    lines.append(f"entrypoint: {the_plan.entrypoint}")
    return lines


def _env_vars(env) -> dict[str, str]:
    """``--env`` items as variables: NAME takes its value from this environment, NAME=VALUE as given."""
    env_vars = {}
    for item in env:
        key, sep, value = item.partition("=")
        if not key.isidentifier():
            raise SubmitError(f"--env {item!r}: expected NAME (its value taken from this environment) or "
                              "NAME=VALUE")
        if not sep:
            if key not in os.environ:
                raise SubmitError(f"--env {key}: {key} is not set in this environment; export it first, or "
                                  f"pass {key}=VALUE")
            value = os.environ[key]
        env_vars[key] = value
    return env_vars


def stage(files: list[tuple[str, int]], root: Path, spec: dict, dump_yaml: Callable[[dict], str]) -> Path:
    """A folder holding exactly the files to ship and the resolved spec (written with ``dump_yaml``, the
    spec's writer, so that the job's spec reader reads back the same values)."""
    staging = Path(tempfile.mkdtemp(prefix="trainyard-submit-"))
    try:
        for rel, _ in files:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, target)
        spec_file = staging / SPEC_IN_JOB
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(dump_yaml(spec))
    except BaseException as exc:
        # A partial copy (up to the upload limit) was left in the temp folder: a file deleted meanwhile, a full disk.
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise SubmitError(f"copying the job's files failed: {exc.filename or ''}: {exc.strerror or exc}; nothing "
                              "was sent (a file changed while it was copied, or the temp folder is full: "
                              "set TMPDIR)") from None
        raise
    return staging


# ---------------------------------------------------------------------------------------------- submit

def plan(spec_path, raw_spec: dict, address: str | None, mode: str = "run", *, shared=(), env=(),
         allow_files=(), max_upload_mb: float = UPLOAD_LIMIT_MB, root: Path = REPO_ROOT, resume: bool = False,
         resume_command: str | None = None, overrides=()) -> Plan:
    """Decide what to submit (spec, paths, files, entrypoint) and refuse early what cannot work.

    ``raw_spec``: the spec file ``spec_path`` as its reader reads it, ``--set`` overrides applied; it is not
    changed (the plan holds a copy with the paths settled). ``env``: ``--env`` items (NAME or NAME=VALUE);
    ``allow_files``: ``--allow-file`` patterns, files to ship although they look like secrets. ``resume``: the
    job continues the search a stopped job of the same spec left in its output; ``resume_command``: the
    command that would do that, for a job that runs a search (its driver and `jobs stop` say it);
    ``overrides``: the ``--set`` items ``raw_spec`` has applied, kept in the job's metadata."""
    if mode not in MODES:
        raise SubmitError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    if resume and mode == "train":
        raise SubmitError("--resume continues a stopped search: submit it with --mode tune (or run), as the "
                          "search was; a training run resumes only within its job (train.max_failures)")
    spec_path = Path(spec_path)
    spec = _check_spec(spec_path, raw_spec)
    url = dashboard_url(address)
    same_machine = parse_address(url).is_loopback
    shared = list(shared) + [p for p in os.environ.get(SHARED_ENV, "").split(os.pathsep) if p]
    notes: list[str] = []
    refused: list[str] = []         # every path the cluster cannot read, said at once (it was one a submit)

    def settle(value, name: str, must_exist: bool) -> str:
        try:
            return _settle_path(str(value), name, spec_path, same_machine, shared, url, must_exist, notes)
        except SubmitError as exc:
            refused.append(str(exc))
            return str(value)

    paths = spec["data"]["path"]
    if isinstance(paths, list):
        spec["data"]["path"] = [settle(p, f"data.path[{i}]", True) for i, p in enumerate(paths)]
    else:
        spec["data"]["path"] = settle(paths, "data.path", True)
    # Mirrors JobSpec.output_dir's default, so that the default output also lands somewhere visible.
    spec["output"] = settle(spec.get("output") or f"runs/{spec['name']}", "output", False)
    if refused:
        raise SubmitError("\n".join(refused))

    files = repository_files(root)
    _refuse_secrets(files, list(allow_files), root)
    _check_size(files, max_upload_mb, root)
    env_vars = _env_vars(env)
    data_paths = spec["data"]["path"] if isinstance(spec["data"]["path"], list) else [spec["data"]["path"]]
    storage_check = " ".join(["python -m cluster.storage", shlex.quote(spec["output"])]
                             + [f"--data {shlex.quote(p)}" for p in data_paths])
    # --storage-checked: the step before has checked the paths; trainyard does not check them a second time.
    command = (f"python -m trainyard {mode} {SPEC_IN_JOB} --storage-checked"
               + (" --no-serve" if mode == "run" else "") + (" --resume" if resume else ""))
    entrypoint = f"python -m cluster.envcheck && {storage_check} && {command}"
    submission_id = f"trainyard-{spec['name']}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    return Plan(spec_path, spec, mode, entrypoint, submission_id, spec["output"], files, env_vars, notes, root,
                resume_command, same_machine, tuple(overrides), url)


def submit(the_plan: Plan, address: str | None, dump_yaml: Callable[[dict], str], *, wait: bool = False,
           entrypoint: str | None = None, progress: Callable[[str], None] = print) -> dict:
    """Submit a plan (``plan()``) as a Ray job; with ``wait``, stream its logs and return once it has ended.

    Returns the job's info (``cluster.jobs_api.describe``): id, status, output, ...
    ``dump_yaml`` writes the staged spec (the spec's own YAML writer). ``entrypoint`` replaces the trainyard
    command (tests use it to run something small the same way).
    """
    client = job_client(address)  # fails on a wrong address or token before anything is staged
    for note in the_plan.notes:
        progress(f"note: {note}")
    for line in describe(the_plan):
        progress(line)
    staging = stage(the_plan.files, the_plan.root, the_plan.spec, dump_yaml)
    try:
        # trainyard's own variables first (cluster.submit.STOP_ENV, RESUME_ENV): an --env of the same name wins.
        resume = {RESUME_ENV: the_plan.resume_command} if the_plan.resume_command else {}
        runtime_env = {"working_dir": str(staging), "env_vars": {**STOP_ENV, **resume, **the_plan.env_vars}}
        job_id = client.submit_job(entrypoint=entrypoint or the_plan.entrypoint, runtime_env=runtime_env,
                                   metadata=the_plan.metadata, submission_id=the_plan.submission_id)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"submitted {job_id} to {client.get_address()}; outputs go to {the_plan.output}")
    if not wait:
        progress(f"follow it with: trainyard jobs logs {job_id} --follow --address {client.get_address()}")
        return jobs_api.job_info(job_id, client=client)
    try:
        info = jobs_api.follow_logs(job_id, client=client, write=lambda s: print(s, end="", flush=True))
    except KeyboardInterrupt:
        # Only the following stops: the job runs on, which "interrupted" alone did not say.
        progress(f"stopped following job {job_id}, which runs on in the cluster; stop it with: trainyard jobs stop "
                 f"{job_id} --address {client.get_address()} (or follow it again with: trainyard jobs logs {job_id} "
                 f"--follow --address {client.get_address()})")
        raise
    progress(f"job {job_id} {info['status']}" + (f": {info['summary']}" if info["summary"] else "")
             + (f"; outputs in {info['output']}" if info["status"] == "SUCCEEDED" else ""))
    return info
