"""What `trainyard submit` ships and what it refuses, decided before anything is uploaded.
(Submitting to a real cluster: tests/test_cluster_local.py.)"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster import envcheck, jobs_api
from cluster.submit import SPEC_IN_JOB, SubmitError, describe, repository_files
from trainyard.submit import plan, submit

ROOT = Path(__file__).resolve().parents[1]
REMOTE = "http://10.255.0.1:8265"  # never contacted: every refusal below happens before any connection


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def write(path: Path, text: str = "x", size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if size is not None:
        with open(path, "r+b") as f:
            f.truncate(size)  # sparse: a "big" file without writing its bytes
    return path


@pytest.fixture
def repo(tmp_path):
    """A small git checkout with everything that must not ship next to what must."""
    root = tmp_path / "repo"
    write(root / "jobs" / "cli.py", "print('hi')\n")
    write(root / "pyproject.toml", "[project]\nname='x'\n")
    write(root / "examples" / "spec.yaml", "name: x\n")
    write(root / ".gitignore", "*.ckpt\nscratch/\n")
    for junk in (".venv/lib/site.py", "runs/a/model.pt", "data/shard-0.parquet", "bundles/b/model.safetensors",
                 "jobs/__pycache__/cli.cpython-311.pyc", "model.ckpt", "scratch/notes.txt", ".trainyard/cluster.json",
                 "tests/schemas/big.yaml", "logs/predictions/pm/part-1.parquet", "monitor/drift.json"):
        write(root / junk)
    if shutil.which("git"):
        subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def spec_file(tmp_path: Path, **fields) -> Path:
    spec = {"name": "demo", "data": {"path": str(tmp_path / "data"), "label": "y"}, "output": str(tmp_path / "out")}
    spec.update(fields)
    (tmp_path / "data").mkdir(exist_ok=True)
    return write(tmp_path / "spec.yaml", yaml.safe_dump(spec))


EXPECTED = ["examples/spec.yaml", "jobs/cli.py", "pyproject.toml"]


@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_ships_what_git_would_commit_minus_outputs_and_data(repo):
    assert [rel for rel, _ in repository_files(repo)] == EXPECTED


def test_without_git_honours_gitignore_and_the_fixed_excludes(repo):
    shutil.rmtree(repo / ".git", ignore_errors=True)
    assert [rel for rel, _ in repository_files(repo)] == EXPECTED


def test_this_repository_ships_small(tmp_path):
    files = [rel for rel, _ in repository_files(ROOT)]
    assert "cluster/submit.py" in files and "cluster/connection.py" in files and "pyproject.toml" in files
    assert not [f for f in files if f.startswith((".venv/", ".git/", "runs/", "data/", "tests/"))]


def test_oversized_working_dir_is_refused_before_upload(repo, tmp_path):
    write(repo / "models" / "weights.bin", size=120 * 2**20)
    write(repo / "notebooks" / "big.ipynb", size=3 * 2**20)
    # An address where nothing listens: reaching it would raise a connection error, not this one.
    with pytest.raises(SubmitError) as err:
        submit(spec_file(tmp_path), closed_port_url(), root=repo)
    message = str(err.value)
    assert "123.0 MiB" in message and "over the 100 MiB" in message and "nothing was uploaded" in message
    assert "models/weights.bin (120.0 MiB)" in message and "models/ (120.0 MiB)" in message
    assert message.index("models/weights.bin") < message.index("notebooks/big.ipynb")


def test_local_data_path_is_refused_for_a_remote_cluster(tmp_path, repo):
    with pytest.raises(SubmitError) as err:
        plan(spec_file(tmp_path), REMOTE, root=repo)
    message = str(err.value)
    assert "data.path" in message and str(tmp_path / "data") in message and REMOTE in message
    assert "s3://" in message and "--shared" in message
    # The output, local too, in the same refusal: it came a second submit later.
    assert [line.split(" is a path")[0] for line in message.splitlines()] == [
        f"{tmp_path / 'spec.yaml'}: data.path {str(tmp_path / 'data')!r}", f"{tmp_path / 'spec.yaml'}: output "
        f"{str(tmp_path / 'out')!r}"]


def test_relative_output_is_refused_for_a_remote_cluster(tmp_path, repo):
    spec = spec_file(tmp_path, data={"path": "s3://bucket/data", "label": "y"}, output=None)
    with pytest.raises(SubmitError, match=r"output 'runs/demo' is a path on this machine"):
        plan(spec, REMOTE, root=repo)


def test_uris_and_shared_prefixes_pass_for_a_remote_cluster(tmp_path, repo):
    spec = spec_file(tmp_path, output="gs://bucket/runs/demo")
    p = plan(spec, REMOTE, shared=[str(tmp_path)], root=repo)
    assert p.spec["data"]["path"] == str(tmp_path / "data") and p.output == "gs://bucket/runs/demo"
    p = plan(spec, REMOTE, overrides=["data.path=s3://bucket/data"], root=repo)
    assert p.spec["data"]["path"] == "s3://bucket/data"


def test_a_relative_path_under_a_shared_prefix_passes_made_absolute(tmp_path, repo, monkeypatch):
    """`--shared /tmp/medproj` with the spec's `data/labs/`, run from /tmp/medproj, was refused with the same
    advice to use --shared; the relative path is the shared one, made absolute (as for a cluster on this
    machine). Outside every prefix it is still refused."""
    monkeypatch.chdir(tmp_path)
    spec = spec_file(tmp_path, data={"path": "data/", "label": "y"}, output="s3://bucket/out")
    p = plan(spec, REMOTE, shared=[str(tmp_path)], root=repo)
    assert p.spec["data"]["path"] == str(tmp_path / "data") and any("under --shared" in n for n in p.notes)
    with pytest.raises(SubmitError, match=r"data.path 'data/' is a path on this machine"):
        plan(spec, REMOTE, shared=[str(tmp_path / "elsewhere")], root=repo)


def test_same_machine_cluster_gets_absolute_paths(tmp_path, repo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = spec_file(tmp_path, data={"path": "data", "label": "y"}, output="runs/demo")
    p = plan(spec, "http://127.0.0.1:8265", root=repo)
    assert p.spec["data"]["path"] == str(tmp_path / "data")
    assert p.output == str(tmp_path / "runs" / "demo")
    assert any("runs/demo" in note for note in p.notes)


def test_missing_local_data_is_refused(tmp_path, repo):
    spec = spec_file(tmp_path, data={"path": str(tmp_path / "nope"), "label": "y"})
    with pytest.raises(SubmitError, match=r"data.path .*nope.* does not exist here"):
        plan(spec, "http://127.0.0.1:8265", root=repo)


def test_entrypoint_checks_the_cluster_then_runs_trainyard(tmp_path, repo):
    p = plan(spec_file(tmp_path), "http://127.0.0.1:8265", overrides=["train.epochs=2"], env=["A=1"], root=repo)
    steps = p.entrypoint.split(" && ")
    assert steps[0] == "python -m cluster.envcheck"
    assert steps[1].startswith(f"python -m cluster.storage {tmp_path / 'out'} --data {tmp_path / 'data'}")
    assert steps[2] == f"python -m trainyard run {SPEC_IN_JOB} --storage-checked --no-serve"
    # The job's trainyard accepts what the entrypoint passes, and so skips the storage check done just before.
    from trainyard.cli import build_parser
    for mode in ("run", "train", "tune"):
        command = plan(spec_file(tmp_path, tune={"samples": 2}), "http://127.0.0.1:8265", mode=mode,
                       root=repo).entrypoint.split(" && ")[-1]
        assert build_parser().parse_args(command.split()[3:]).storage_checked, command
    assert p.spec["train"] == {"epochs": 2} and p.env_vars == {"A": "1"}
    assert p.metadata["trainyard_output"] == str(tmp_path / "out")
    assert plan(spec_file(tmp_path, tune={"samples": 2}), "http://127.0.0.1:8265", mode="tune",
                root=repo).entrypoint.endswith(f"python -m trainyard tune {SPEC_IN_JOB} --storage-checked")


def test_a_spec_that_can_never_run_is_refused_before_it_is_sent(tmp_path, repo):
    """It was sent, and failed on the cluster ~10 s later blaming `.trainyard-job/spec.yaml`, a file the user never
    wrote; now `submit` validates it as `trainyard validate` does, naming the file or --set."""
    from jobs.spec import SpecError

    with pytest.raises(SpecError, match=r"--set: train.epochs: Input should be greater than 0"):
        plan(spec_file(tmp_path), "http://127.0.0.1:8265", overrides=["train.epochs=0"], root=repo)
    with pytest.raises(SpecError, match=r"spec.yaml: train.epoch: unknown key"):
        plan(spec_file(tmp_path, train={"epoch": 3}), "http://127.0.0.1:8265", root=repo)
    with pytest.raises(SpecError, match=r"--mode tune: the spec has no `tune` section"):
        plan(spec_file(tmp_path), "http://127.0.0.1:8265", mode="tune", root=repo)


@pytest.mark.parametrize("overrides,env,says", [
    (["train.epochs"], [], "expected FIELD=VALUE"),
    (["train.epochs=[1"], [], "not valid YAML"),
    ([], ["1BAD=x"], "expected NAME"),
    ([], ["TRAINYARD_TEST_UNSET_VARIABLE"], "TRAINYARD_TEST_UNSET_VARIABLE is not set in this environment"),
])
def test_bad_overrides_are_named(tmp_path, repo, overrides, env, says):
    with pytest.raises(SubmitError, match=says):
        plan(spec_file(tmp_path), "http://127.0.0.1:8265", overrides=overrides, env=env, root=repo)


def test_spec_without_data_path_is_refused(tmp_path, repo):
    spec = write(tmp_path / "bad.yaml", yaml.safe_dump({"name": "x", "data": {"label": "y"}}))
    from jobs.spec import SpecError
    with pytest.raises(SpecError, match=r"bad.yaml: data.path: required but missing"):     # as validate says it
        plan(spec, "http://127.0.0.1:8265", root=repo)


def test_cli_exit_code_and_message(tmp_path, repo):
    out = subprocess.run([sys.executable, "-m", "trainyard", "submit", str(spec_file(tmp_path)), "--address", REMOTE],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("trainyard: error: ") and "Traceback" not in out.stderr
    # a name no shell takes: refused, without first the advice to `export 1BAD=...`
    out = subprocess.run([sys.executable, "-m", "trainyard", "submit", str(spec_file(tmp_path)), "--address", REMOTE,
                          "--env", "1BAD=x"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "export" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_envcheck_reads_the_dependencies_and_names_what_is_missing(tmp_path, capsys):
    modules = envcheck.required_modules(ROOT / "pyproject.toml")
    assert {"ray", "torch", "pyarrow", "yaml", "pydantic"} <= set(modules)
    assert envcheck.main([str(ROOT / "pyproject.toml")]) == 0
    fake = write(tmp_path / "pyproject.toml",
                 '[project]\ndependencies = [\n    "ray>=2.60",\n    "no-such-package-xyz>=1",\n]\n')
    assert envcheck.main([str(fake)]) == envcheck.EXIT_MISSING
    err = capsys.readouterr().err
    assert "lacks no_such_package_xyz" in err and sys.executable in err and "pip install ." in err
    # a package of a version outside the range trainyard asks (a cluster's Ray 2.59 passed, then failed in Ray Train)
    fake = write(tmp_path / "pyproject.toml", '[project]\ndependencies = [\n    "pytest<1",\n    "pyyaml>=6",\n]\n')
    assert envcheck.main([str(fake)]) == envcheck.EXIT_MISSING
    err = capsys.readouterr().err
    assert f"has pytest {pytest.__version__} (trainyard needs <1)" in err and "pyyaml" not in err, err


@pytest.mark.parametrize("tomllib", ["tomllib", "none (Python 3.10)"])
def test_envcheck_reads_every_dependency_whatever_the_comments_say(tmp_path, monkeypatch, tomllib):
    """A comment with an apostrophe between two dependencies ("the bundle's profile") once read as a quote and
    swallowed the dependency after it; both readers (tomllib, and the parser used without it) take them all."""
    if tomllib != "tomllib":
        monkeypatch.setitem(sys.modules, "tomllib", None)
    fake = write(tmp_path / "pyproject.toml",
                 '[project]\ndependencies = [\n    "ray>=2.60",\n    # the bundle\'s profile (it\'s drift)\n'
                 '    "scipy>=1.10",   # Kolmogorov-Smirnov\n    "pyyaml>=6",\n]\n')
    assert envcheck.required_modules(fake) == ["ray", "scipy", "yaml"]


def test_the_staged_spec_reads_back_as_given(tmp_path, repo):
    """The job reads .trainyard-job/spec.yaml with the spec reader (where 1e-3 is a number): text that looks
    like a number must stay text, numbers stay numbers, and the spec file's own YAML reads the same way."""
    from cluster.submit import stage
    from jobs.spec import load_spec, read_yaml, write_yaml

    (tmp_path / "data").mkdir()
    # As a person writes it: 1e-3 unquoted (a number to the spec reader); a name and a column that look like
    # numbers, quoted.
    path = write(tmp_path / "spec.yaml", f"name: '1e5'\ndata: {{path: {tmp_path / 'data'}, label: y, features: "
                 f"{{exclude: ['1e3']}}}}\ntrain: {{lr: 1e-3}}\noutput: {tmp_path / 'out'}\n")
    p = plan(path, "http://127.0.0.1:8265", overrides=["train.epochs=2", "train.weight_decay=1e-4"], root=repo)
    staging = stage([], repo, p.spec, write_yaml)
    try:
        staged = read_yaml((staging / SPEC_IN_JOB).read_text())
        assert staged["name"] == "1e5" and staged["data"]["features"]["exclude"] == ["1e3"]
        assert staged["train"] == {"lr": 0.001, "epochs": 2, "weight_decay": 0.0001}
        spec = load_spec(staging / SPEC_IN_JOB)
        assert spec.name == "1e5" and spec.train.lr == 0.001
    finally:
        shutil.rmtree(staging)


def test_a_copy_that_fails_leaves_no_staging_folder_and_names_the_file(tmp_path, repo, monkeypatch):
    """A file gone between the plan and the copy left the partial copy (up to 100 MiB) in the temp folder and a
    raw FileNotFoundError."""
    import tempfile

    from cluster.errors import BadInput
    from cluster.submit import stage
    from jobs.spec import write_yaml

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    (repo / "kept.py").write_text("x = 1\n")
    with pytest.raises(BadInput, match=r"copying the job's files failed: .*gone\.py: No such file.*nothing was sent"):
        stage([("kept.py", 6), ("gone.py", 6)], repo, {"name": "x"}, write_yaml)
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.skipif(not shutil.which("git"), reason="needs git")
def test_without_git_the_gitignore_selects_what_git_selects(tmp_path):
    """The walk used outside a git checkout (pathspec's GitIgnoreSpec) ships what git would, pattern by pattern:
    anchored and unanchored names, folders, `**`, character classes, and `!` re-includes."""
    root = tmp_path / "repo"
    write(root / ".gitignore", "\n".join([
        "# a comment", "*.log", "!keep.log", "/top.txt", "build/", "**/cache/*.bin", "docs/*.tmp", "report[0-9].csv",
        "nested/**/deep.txt", "logs/", "!logs/important.txt", "name with space.txt", "\\#hash.txt", ""]))
    for rel in ("a.log", "keep.log", "sub/b.log", "sub/keep.log", "top.txt", "sub/top.txt", "build/x.py",
                "sub/build/y.py", "cache/z.bin", "a/cache/z.bin", "a/cache/z.txt", "docs/n.tmp", "docs/d/n.tmp",
                "report1.csv", "reportA.csv", "nested/deep.txt", "nested/a/b/deep.txt", "logs/important.txt",
                "logs/other.txt", "name with space.txt", "#hash.txt", "plain.py", "sub/plain.py"):
        write(root / rel)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    by_git = [rel for rel, _ in repository_files(root)]
    shutil.rmtree(root / ".git")
    assert [rel for rel, _ in repository_files(root)] == by_git
    assert "plain.py" in by_git and "keep.log" in by_git and "a.log" not in by_git   # the fixture means something


SECRETS = [".env", "app/.env.production", "keys/server.pem", "tls/server.key", ".aws/credentials", "deploy/id_rsa",
           "deploy/id_rsa.pub", "config/credentials.json",
           # A security review's list: the README's own serve-token among them.
           "serve-token", "token.txt", ".docker/config.json", ".kube/config", "kubeconfig",
           ".config/gcloud/application_default_credentials.json", "gcp-sa.json", ".npmrc", ".pypirc", ".htpasswd",
           "infra/terraform.tfvars", "k8s/secrets.yaml"]


def test_files_that_hold_secrets_are_refused_naming_them_and_the_flag(repo, tmp_path):
    """Untracked, not ignored, so git would list them: without the check they would ship to the cluster."""
    for rel in SECRETS:
        write(repo / rel, "SECRET=1\n")
    with pytest.raises(SubmitError) as err:
        plan(spec_file(tmp_path), "http://127.0.0.1:8265", root=repo)
    message = str(err.value)
    assert all(rel in message for rel in SECRETS), message
    assert "nothing was uploaded" in message and "--allow-file" in message and ".gitignore" in message
    assert "pyproject.toml" not in message

    # Allowed by pattern, the rest still refused; all allowed, they ship.
    with pytest.raises(SubmitError) as err:
        plan(spec_file(tmp_path), "http://127.0.0.1:8265", allow_files=[".env*", "*.pem"], root=repo)
    assert "keys/server.pem" not in str(err.value) and ".env" not in str(err.value).split(": ", 1)[1]
    assert "tls/server.key" in str(err.value) and ".aws/credentials" in str(err.value)
    p = plan(spec_file(tmp_path), "http://127.0.0.1:8265", root=repo,
             allow_files=[".env*", "*.pem", "*.key", ".aws/", "id_rsa*", "credentials*", "*token*", ".docker/",
                          ".kube/", "kubeconfig", ".config/", "*.json", ".npmrc", ".pypirc", ".htpasswd", "*.tfvars",
                          "secrets.yaml"])
    assert set(SECRETS) <= {rel for rel, _ in p.files}
    import pathspec                                   # as submit matches them; a text model's tokenizer is no secret
    from cluster.submit import SECRET_PATTERNS
    secret = pathspec.GitIgnoreSpec.from_lines(SECRET_PATTERNS)
    assert not any(secret.match_file(f) for f in ("models/tokenizer.json", "jobs/tokens.py", "tokenizer/vocab.txt"))


def test_ignored_secret_files_never_get_that_far(repo, tmp_path):
    write(repo / ".gitignore", "*.ckpt\nscratch/\n.env\n")
    write(repo / ".env", "SECRET=1\n")
    assert ".env" not in {rel for rel, _ in plan(spec_file(tmp_path), "http://127.0.0.1:8265", root=repo).files}


def test_what_is_sent_is_said_before_it_is_sent(repo, tmp_path):
    write(repo / "models" / "big.bin", size=3 * 2**20)
    for i in range(6):
        write(repo / "src" / f"m{i}.py", "x" * (100 * (i + 1)))
    p = plan(spec_file(tmp_path), "http://127.0.0.1:8265", env=["A=1"], root=repo)
    summary = describe(p)
    assert summary[0].startswith(f"upload: {len(p.files)} files, 3.0 MiB, from {repo}")
    assert summary[1].startswith("  largest: models/big.bin (3.0 MiB), src/m5.py (600 B), src/m4.py (500 B)")
    assert "--dry-run" in summary[1] and not any("src/m0.py" in line for line in summary)
    assert "job environment (values not shown): A" in summary
    every = describe(p, every_file=True)
    assert all(any(rel in line for line in every) for rel, _ in p.files)


def test_env_by_name_takes_the_value_from_this_environment(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINYARD_TEST_SECRET", "s3cr3t-value")
    p = plan(spec_file(tmp_path), "http://127.0.0.1:8265", env=["TRAINYARD_TEST_SECRET", "B=2"], root=repo)
    assert p.env_vars == {"TRAINYARD_TEST_SECRET": "s3cr3t-value", "B": "2"}
    assert "s3cr3t-value" not in p.entrypoint and not any("s3cr3t-value" in line for line in describe(p))


def test_dry_run_lists_every_file_and_sends_nothing(tmp_path, monkeypatch):
    """`--dry-run` against an address where nothing listens: it lists and stops, so it never gets to connect."""
    env = dict(os.environ, TRAINYARD_TEST_SECRET="s3cr3t-value")
    out = subprocess.run([sys.executable, "-m", "trainyard", "submit", str(spec_file(tmp_path)), "--address",
                          closed_port_url(), "--dry-run", "--env", "TRAINYARD_TEST_SECRET"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    for rel, _ in repository_files(ROOT):
        assert rel in out.stdout
    assert "dry run: nothing was sent" in out.stdout and "TRAINYARD_TEST_SECRET" in out.stdout
    assert "s3cr3t-value" not in out.stdout + out.stderr


def test_a_jobs_message_is_shown_without_the_log_tail_and_its_exit_code_read():
    """`submit --wait` printed Ray's failure message with its log tail, the logs just streamed again, and exited 1
    for a job whose entrypoint refused its spec (exit 2); success read "Job finished successfully.; outputs"."""
    from cluster.jobs_api import exit_code, short_message

    failed = "Job entrypoint command failed with exit code 2, last available logs (truncated to 20,000 chars):\nx"
    assert short_message(failed) == "Job entrypoint command failed with exit code 2"
    assert short_message("Job finished successfully.") == "Job finished successfully"
    assert exit_code({"driver_exit_code": None, "message": failed}) == 2
    assert exit_code({"driver_exit_code": 1, "message": failed}) == 1
    assert exit_code({"driver_exit_code": None, "message": "Job was intentionally stopped."}) is None


def test_a_jobs_set_overrides_travel_in_its_metadata_and_jobs_status_says_them(tmp_path, repo, capsys):
    """Jobs of one spec submitted with other --set values (epochs, output) looked identical in `jobs list` and
    `jobs status`: the job's metadata kept the spec, mode and output alone."""
    from ray.job_submission import JobDetails, JobStatus, JobType

    from cluster.commands import print_job

    p = plan(spec_file(tmp_path), "http://127.0.0.1:8265", overrides=["train.epochs=5", "model.hidden=[32, 16]"],
             root=repo)
    assert p.metadata["trainyard_set"] == "--set train.epochs=5 --set 'model.hidden=[32, 16]'"
    assert "trainyard_set" not in plan(spec_file(tmp_path), "http://127.0.0.1:8265", root=repo).metadata
    details = JobDetails(type=JobType.SUBMISSION, submission_id=p.submission_id, entrypoint=p.entrypoint,
                         status=JobStatus.SUCCEEDED, metadata=p.metadata)
    print_job(jobs_api.describe(details))
    assert "set      --set train.epochs=5 --set 'model.hidden=[32, 16]'\n" in capsys.readouterr().out


def test_a_search_can_be_resubmitted_to_continue_where_a_stopped_job_left_it(tmp_path, repo, monkeypatch):
    """A search stopped with `trainyard jobs stop` had no way back but by hand; `submit --resume` continues it,
    and a job that searches carries the command that does (its driver and `jobs stop` say it)."""
    from jobs.spec import SpecError

    url = "http://127.0.0.1:8265"
    monkeypatch.setenv("TOKEN", "t0ken")
    searching = spec_file(tmp_path, tune={"samples": 2})
    p = plan(searching, url, mode="tune", overrides=["train.epochs=2"], resume=True, shared=["/mnt/s"],
             env=["TOKEN", "A=1"], root=repo)
    assert p.entrypoint.endswith(f"python -m trainyard tune {SPEC_IN_JOB} --storage-checked --resume")
    again = (f"trainyard submit {searching} --mode tune --set train.epochs=2 --shared /mnt/s --env TOKEN --env A "
             f"--address {url} --resume")
    assert p.resume_command == again and p.metadata["trainyard_resume"] == again        # never an --env value
    assert plan(searching, url, root=repo).resume_command.startswith(f"trainyard submit {searching} --mode run")
    # `tune: {}` is a search too (16 samples by default); the address goes without credentials or a query; the
    # upload options go along.
    (tmp_path / "t0").mkdir()
    assert plan(spec_file(tmp_path / "t0", tune={}), url, root=repo).resume_command is not None
    secret = plan(searching, "https://ops:hunter2@head:8265/?token=abc", allow_files=["*.pem"], max_upload_mb=50,
                  root=repo, shared=[str(tmp_path)]).resume_command
    assert "hunter2" not in secret and "abc" not in secret and "--address https://head:8265/" in secret
    assert "--allow-file '*.pem' --max-upload-mb 50" in secret
    (tmp_path / "t").mkdir()
    training = spec_file(tmp_path / "t")
    assert plan(training, url, root=repo).resume_command is None                       # nothing searched
    assert "trainyard_resume" not in plan(training, url, root=repo).metadata
    assert plan(searching, url, mode="train", root=repo).resume_command is None
    with pytest.raises(SubmitError, match=r"--resume continues a stopped search: submit it with --mode tune"):
        plan(searching, url, mode="train", resume=True, root=repo)
    with pytest.raises(SpecError, match=r"--resume continues a stopped search, and the spec has no `tune`"):
        plan(training, url, resume=True, root=repo)


def test_data_the_cluster_reads_from_this_disk_is_checked_here_before_anything_is_sent(tmp_path, repo):
    """A misspelt label was uploaded and failed on the cluster ~15 s later; `validate` found it in a second. Data
    at a URI is the cluster's to read (its credentials), not checked here."""
    from cluster.errors import BadInput
    from trainyard.cli import check_before_ray
    from trainyard.submit import check_data_here

    spec = spec_file(tmp_path)
    (tmp_path / "data" / "part-0.csv").write_text("x,diagnosis\n1,a\n2,b\n3,a\n")
    url = "http://127.0.0.1:8265"
    with pytest.raises(BadInput, match=r"label column 'diagnosos' is in none of .*did you mean 'diagnosis'"):
        check_data_here(plan(spec, url, overrides=["data.label=diagnosos"], root=repo), check_before_ray)
    check_data_here(plan(spec, url, overrides=["data.label=diagnosis"], root=repo), check_before_ray)
    # Another cluster checks for itself, --shared paths included (its nodes may cache what this machine lacks).
    remote = "http://10.1.2.3:8265"
    for sets, shared in ((["data.path=s3://bucket/labs", "output=s3://bucket/o"], []), ([], [str(tmp_path)])):
        check_data_here(plan(spec, remote, overrides=sets + ["data.label=diagnosos"], shared=shared, root=repo),
                        check_before_ray)
    run = subprocess.run([sys.executable, "-m", "trainyard", "submit", str(spec), "--address", url, "--dry-run",
                          "--set", "data.label=diagnosos"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "diagnosos" in run.stderr and "dry run" not in run.stdout, run.stderr
    # --resume with no search of this spec in the output: refused here, not on the cluster after the upload
    search = spec_file(tmp_path, tune={"samples": 2})
    run = subprocess.run([sys.executable, "-m", "trainyard", "submit", str(search), "--address", url, "--dry-run",
                          "--mode", "tune", "--resume", "--set", "data.label=diagnosis"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "--resume" in run.stderr and "dry run" not in run.stdout, run.stderr


def test_jobs_status_finds_the_bundle_a_job_wrote_in_its_log():
    """The output's `bundle` names the newest version, maybe another job's: the job's own is the last
    `bundle written to` line of its log (a job that retrained twice names the second)."""
    from cluster.jobs_api import BUNDLE_WRITTEN, written_bundle

    log = f"[train] epoch 1/2\n{BUNDLE_WRITTEN}/runs/a/bundles/1\n[serve] ...\n{BUNDLE_WRITTEN}/runs/a/bundles/2\n"
    assert written_bundle(log) == "/runs/a/bundles/2"
    assert written_bundle("[train] failed\n  bundle written to nowhere\n") is None
