"""The composition root: every trainyard error maps to its exit code in one place, and a package whose
commands cannot load is a clear error, never a vanished subcommand or a run that exits 0 without serving."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput, Failure, TrainyardError
from trainyard import cli

ROOT = Path(__file__).resolve().parents[1]


def _with_broken_serving(tmp_path: Path, argv: list[str]) -> list[str]:
    """`python -m trainyard ARGV` in which `import serving` fails as it does with a dependency missing: a
    `serving` package that raises ImportError comes first on sys.path."""
    fake = tmp_path / "shadow" / "serving"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'fastapi'\")\n")
    boot = (f"import runpy, sys; sys.path.insert(0, {str(fake.parent)!r}); sys.argv = ['trainyard', *{argv!r}]; "
            "runpy.run_module('trainyard', run_name='__main__')")
    return [sys.executable, "-c", boot]


@pytest.mark.parametrize("argv", [["run", "examples/machine-failure.yaml"], ["serve", "runs/x/bundle"],
                                  ["predict", "--url", "http://127.0.0.1:9", "rows.csv"]])
def test_a_package_that_cannot_load_is_named_not_dropped(tmp_path, argv):
    run = subprocess.run(_with_broken_serving(tmp_path, argv), cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == EXIT_FAILED, run.stderr
    assert "trainyard: error: the serving package cannot load: No module named 'fastapi'" in run.stderr
    assert "Fix: install trainyard with its dependencies (`make install`" in run.stderr
    assert "invalid choice" not in run.stderr and "Traceback" not in run.stderr


def test_the_other_packages_commands_still_work_without_serving(tmp_path):
    run = subprocess.run(_with_broken_serving(tmp_path, ["validate", "examples/machine-failure.yaml"]), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "OK" in run.stdout, run.stderr


def test_every_command_is_registered():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"validate", "train", "run", "tune", "serve", "predict", "submit", "monitor",
                                "evaluate", "cluster", "jobs"}


@pytest.mark.parametrize("command", ["train", "run", "tune", "validate", "serve", "monitor"])
def test_commands_that_use_ray_take_verbose(command):
    """Every command that starts or joins Ray; `serve --verbose` was refused, though README said every command."""
    parser = cli.build_parser()
    extra = ["--logs", "logs/"] if command == "monitor" else []
    assert parser.parse_args([command, "spec.yaml", *extra, "--verbose"]).verbose is True
    assert parser.parse_args([command, "spec.yaml", *extra]).verbose is False


@pytest.mark.parametrize("error, code", [(BadInput("the column 'x' is missing"), EXIT_BAD_INPUT),
                                         (Failure("a worker died"), EXIT_FAILED),
                                         (TrainyardError("refused", exit_code=EXIT_BAD_INPUT), EXIT_BAD_INPUT)])
def test_errors_map_to_their_exit_code_in_one_place(monkeypatch, capsys, error, code):
    def fail(args):
        raise error
    monkeypatch.setattr(cli, "cmd_validate", fail)
    assert cli.main(["validate", "spec.yaml"]) == code
    assert capsys.readouterr().err == f"trainyard: error: {error}\n"


def test_tune_without_a_tune_section_is_one_clear_line(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ndata: {path: x, label: y}\n")
    assert cli.main(["tune", str(spec)]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith(f"trainyard: error: {spec} has no `tune` section, so there is nothing")
    # `run --resume` of a training spec trained from the start without a word; now refused before any work.
    assert cli.main(["run", str(spec), "--no-serve", "--resume"]) == EXIT_BAD_INPUT
    assert "--resume continues an interrupted tuning experiment, and this spec has no `tune` section; drop " \
        "--resume" in capsys.readouterr().err


def test_resume_with_nothing_to_resume_or_another_spec_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    """`tune --resume` (and `run --resume`) with no experiment under the output was refused only once Ray had
    started (8.6 s); so was a spec changed since the experiment started. Both are refused before `connect` now."""
    import dataclasses
    import json

    from jobs.spec import load_spec
    from tuning.resume import EXPERIMENT_FILE, EXPERIMENT_PREFIX

    (tmp_path / "rows.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: t\noutput: {tmp_path / 'out'}\ndata: {{path: {tmp_path / 'rows.csv'}, label: y}}\n"
                    "train: {epochs: 3}\ntune: {samples: 2, lr: {loguniform: [1.0e-4, 1.0e-1]}}\n")

    def connect(args, spec=None, imports=()):
        raise Failure("reached connect")
    monkeypatch.setattr(cli, "KIT", dataclasses.replace(cli.KIT, connect=connect))
    for command in (["tune", str(spec), "--resume"], ["run", str(spec), "--no-serve", "--resume"]):
        assert cli.main(command) == EXIT_BAD_INPUT
        assert "--resume: no tuning experiment to continue under " in capsys.readouterr().err
    started = tmp_path / "out" / "ray" / f"{EXPERIMENT_PREFIX}20261206-090000"
    started.mkdir(parents=True)
    (started / EXPERIMENT_FILE).write_text(json.dumps({"spec": load_spec(str(spec)).model_dump(mode="json")}))
    assert cli.main(["tune", str(spec), "--resume", "--set", "train.epochs=4"]) == EXIT_BAD_INPUT
    assert "--resume: the spec changed since experiment tune-20261206-090000 started (train.epochs: 3 → 4)" \
        in capsys.readouterr().err
    assert cli.main(["tune", str(spec), "--resume"]) == EXIT_FAILED         # the same spec: on to Ray
    assert "reached connect" in capsys.readouterr().err
    # The record is replaced whole (a driver SIGKILLed while writing it left it empty, and the next --resume
    # stopped on a JSONDecodeError in CI); one left empty by an earlier trainyard is named, not a traceback.
    from tuning.resume import read_record, write_record
    write_record(started, {**read_record(started), "finished_at": None})
    assert [p.name for p in started.iterdir()] == [EXPERIMENT_FILE]
    (started / EXPERIMENT_FILE).write_text("")
    assert cli.main(["tune", str(spec), "--resume"]) == EXIT_BAD_INPUT
    assert f"--resume: {started / EXPERIMENT_FILE} is unreadable (" in capsys.readouterr().err
    # The record of an experiment an earlier trainyard started, trainyard.json (now trainyard.record: Ray Tune's
    # restore copies a *.json back and forth, and a SIGKILL mid-copy emptied it), is still read.
    from tuning.resume import LEGACY_EXPERIMENT_FILE
    (started / EXPERIMENT_FILE).unlink()
    (started / LEGACY_EXPERIMENT_FILE).write_text(json.dumps({"spec": load_spec(str(spec)).model_dump(mode="json")}))
    assert cli.main(["tune", str(spec), "--resume"]) == EXIT_FAILED and "reached connect" in capsys.readouterr().err


def test_an_output_this_machine_cannot_write_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    """An output on a read-only mount was found only when the run wrote summary.json, after Ray's start and the
    data's read: OSError's traceback, exit 1. A file where the folder would be got past `validate` too. Both are
    refused before Ray by `train`, `tune` and `run`, and a `note:` of `validate` (a spec for a cluster may name a
    folder only its nodes have)."""
    import dataclasses

    (tmp_path / "rows.csv").write_text("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    (tmp_path / "taken").write_text("a file")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: t\ndata: {{path: {tmp_path / 'rows.csv'}, label: y}}\ntrain: {{epochs: 3}}\n")

    def connect(args, spec=None, imports=()):
        raise Failure("reached connect")
    monkeypatch.setattr(cli, "KIT", dataclasses.replace(cli.KIT, connect=connect))
    blocked = str(tmp_path / "taken" / "run")
    for command in (["train"], ["run", "--no-serve"]):
        assert cli.main([*command, str(spec), "--set", f"output={blocked}"]) == EXIT_BAD_INPUT
        assert f"output {blocked!r}: {tmp_path / 'taken'} is a file, not a folder" in capsys.readouterr().err
    assert cli.main(["validate", str(spec), "--set", f"output={blocked}"]) == 0
    assert f"note: output {blocked!r}: {tmp_path / 'taken'} is a file, not a folder; choose another output folder " \
           "(it is created if missing). A run on this machine would stop there" in capsys.readouterr().out
    # A folder that may not be written (root writes anywhere but on a read-only mount: the answer is the OS's).
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path) else real(path, mode))
    assert cli.main(["train", str(spec), "--set", f"output={tmp_path / 'runs' / 't'}"]) == EXIT_BAD_INPUT
    assert (f"output {str(tmp_path / 'runs' / 't')!r}: cannot write to create runs/t in {tmp_path} (") \
        in capsys.readouterr().err
    # An earlier run's bundles/ that may not be written: refused before Ray (it failed after training, the model lost)
    for folder in ("bundles", "tune"):      # tune/: a search's report, written before its bundle
        (tmp_path / "old" / folder).mkdir(parents=True)
        monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path / "old" / folder)
                            else real(path, mode))
        assert cli.main(["train", str(spec), "--set", f"output={tmp_path / 'old'}"]) == EXIT_BAD_INPUT
        assert (f"output {str(tmp_path / 'old')!r}: cannot write {tmp_path / 'old' / folder} (no permission to write "
                "there)") in capsys.readouterr().err
    monkeypatch.setattr(os, "access", real)
    assert cli.main(["train", str(spec), "--set", f"output={tmp_path / 'out'}"]) == EXIT_FAILED     # writable
    assert not (tmp_path / "out").exists()          # nothing made before Ray
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".trainyard-write-check")]   # nor left
    # A folder no one can make a folder in, whatever os.access answers (it answers yes to root, for /proc too): the
    # run failed on the cluster, blaming storage its nodes do not share.
    assert cli.main(["train", str(spec), "--set", "output=/proc/credit-runs"]) == EXIT_BAD_INPUT
    assert "output '/proc/credit-runs': cannot write to create credit-runs in /proc (" in capsys.readouterr().err


def test_train_does_not_check_a_tune_section_it_does_not_use(tmp_path, capsys, monkeypatch):
    import dataclasses
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ndata: {path: x, label: y}\ntrain: {epochs: 2}\n"
                    "tune: {lr: {loguniform: [1.0e-4, 1.0e-1]}, scheduler: {asha: {grace_period: 2}}}\n")
    assert cli.main(["validate", str(spec)]) == EXIT_BAD_INPUT           # grace_period 2 = epochs: no search
    assert "grace_period" in capsys.readouterr().err

    def connect(args, spec=None, imports=()):   # how far `train` got: to Ray, past every check
        raise Failure("reached connect")
    monkeypatch.setattr(cli, "KIT", dataclasses.replace(cli.KIT, connect=connect))
    assert cli.main(["train", str(spec)]) == EXIT_FAILED
    out, err = capsys.readouterr()
    assert err == "trainyard: error: reached connect\n"
    # ... and says so: the tuned bundle's pointer moved to a run of train.lr alone, without a word.
    assert out.splitlines() == [cli.UNUSED_TUNE]


def test_a_data_path_missing_here_is_refused_before_the_embedded_ray_starts(tmp_path):
    """The embedded Ray reads data on this machine: train, tune and run say a data.path that is not here before
    a Ray start (was: after it, 4-8 s); joined to a cluster, whose nodes read it, the path is not looked at."""
    import os
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ndata: {path: nope.csv, label: y}\ntrain: {epochs: 3}\ntune: {samples: 2}\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for command in (["train"], ["tune"], ["run", "--no-serve"]):
        run = subprocess.run([sys.executable, "-m", "trainyard", *command, str(spec)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == EXIT_BAD_INPUT, run.stdout + run.stderr
        assert f"data.path: 'nope.csv' does not exist (looked in {tmp_path})" in run.stderr, run.stderr
        assert "[ray]" not in run.stdout, run.stdout
    run = subprocess.run([sys.executable, "-m", "trainyard", "train", str(spec), "--address", "127.0.0.1:1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "nothing answers at 127.0.0.1:1" in run.stderr, run.stderr


def test_spec_problems_name_the_file(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ndata: {path: x, label: y}\ntrain: {epochs: 0, bogus: 1}\n")
    assert cli.main(["validate", str(spec)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("trainyard: error: the spec has 2 problem(s):")
    assert f"{spec}: train.epochs" in err and f"{spec}: train.bogus: unknown key" in err


def test_python_dash_m_trainyard_is_the_console_script():
    run = subprocess.run([sys.executable, "-m", "trainyard", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "trainyard validate SPEC" in run.stdout



def test_the_command_line_starts_without_the_heavy_libraries():
    """Every `trainyard` command builds the whole parser: registering `tune` and `monitor` must not import
    PyTorch, Ray Tune/Train, pandas or scipy (a command imports what it uses when it runs). They took 2 s of CPU
    and 9-20 s of wall time on 2 loaded cores for every command, `trainyard cluster status` and `--help` too."""
    probe = ("import sys; from trainyard.cli import build_parser; build_parser(); "
             "print([m for m in ('torch', 'ray.tune', 'ray.train', 'pandas', 'scipy') if m in sys.modules])")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_a_training_run_does_not_import_scipy():
    """scipy.stats (1.1 s of imports on 2 cores) is for drift tests only: the modules a training run imports
    (jobs.RUN_IMPORTS, the reference profile among them) leave it out until a drift test needs it."""
    probe = ("import importlib, sys; from jobs import RUN_IMPORTS; [importlib.import_module(m) for m in RUN_IMPORTS]; "
             "print('scipy' in sys.modules); from jobs import drift; import numpy as np; "
             "d = drift.numeric_drift(drift.summarise(np.arange(100.0)), np.arange(50.0)); "
             "assert d['ks_p'] < 1e-6 and d['chi2_p'] < 1e-6, d; "
             "print('scipy' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True"]


def test_import_meanwhile_imports_and_leaves_failures_to_the_real_import():
    name = "tests._imported_meanwhile"
    sys.modules.pop(name, None)
    cli.import_meanwhile(["tests.no_such_module_here", name]).join(timeout=60)
    assert name in sys.modules          # the one after the failing one was still imported
    with pytest.raises(ImportError, match="no_such_module_here"):
        importlib.import_module("tests.no_such_module_here")


def test_a_ray_start_that_fails_inside_ray_init_is_one_line(monkeypatch):
    """On a loaded host `ray.init` raised "The current node timed out during startup" and `train`, `tune`,
    `monitor` printed Ray's traceback as the only message (`serve` wrapped it); now every command's connect does."""
    import argparse

    import cluster

    def timed_out(address=None, **kwargs):
        raise Exception("The current node timed out during startup. This could happen because some of the Ray "
                        "processes failed to startup.")
    monkeypatch.setattr(cluster, "connect", timed_out)
    with pytest.raises(Failure, match=r"^cannot start or join Ray: The current node timed out during startup\..*"
                                      r"run the command again"):
        cli.connect(argparse.Namespace(address=None, verbose=True))


def test_the_console_script_collects_and_freezes_what_the_command_left(monkeypatch):
    """`trainyard` (the console script) and `python -m trainyard` run `cli.run`: the command's code, then the
    garbage collected and the rest frozen, so the interpreter's exit does not walk it (~1 s less on 2 cores)."""
    import gc
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts", name="trainyard")] == ["trainyard.cli:run"]
    assert "sys.exit(run())" in (Path(cli.__file__).parent / "__main__.py").read_text()
    monkeypatch.setattr(cli, "main", lambda: 3)
    gc.unfreeze()
    try:
        assert cli.run() == 3
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()       # this test process goes on: its objects stay collectable


def test_validate_notes_trials_ranked_by_one_metric_and_stopped_by_another(tmp_path, capsys):
    """A search ranked by val_accuracy with trials stopping (and keeping their best epoch) by val_f1 passed
    validate without a word."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ndata: {path: x, label: y}\ntrain: {epochs: 4, early_stop: {metric: val_f1}}\n"
                    "tune: {metric: val_accuracy, scheduler: none}\n")
    assert cli.main(["validate", str(spec)]) == EXIT_OK
    assert ("note: trials are ranked by tune.metric val_accuracy, but each stops, and keeps the weights of its "
            "best epoch, by train.early_stop.metric val_f1") in capsys.readouterr().out
    spec.write_text(spec.read_text().replace("metric: val_accuracy", "metric: val_f1"))
    assert cli.main(["validate", str(spec)]) == EXIT_OK
    assert "trials are ranked" not in capsys.readouterr().out


def test_a_set_written_with_spaces_around_the_equals_sign_is_told_how_to_write_it(capsys):
    """argparse said only "unrecognized arguments: = 3"."""
    assert cli.main(["validate", "s.yaml", "--set", "train.epochs", "=", "3"]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == ("trainyard: error: --set train.epochs =...: write FIELD=VALUE as one word, "
                                       "without spaces: --set train.epochs=3\n")
    assert cli.main(["validate", "s.yaml", "--set", "train.epochs", "=3"]) == EXIT_BAD_INPUT
    assert "--set train.epochs=3" in capsys.readouterr().err


def test_output_cut_off_by_its_reader_ends_the_command_without_a_traceback(tmp_path):
    """`trainyard jobs logs ID --follow | head` ended in a BrokenPipeError traceback, exit 1. Its reader gone
    (here: before the first line), a command ends as SIGPIPE would end it: exit 141, nothing on stderr."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: cut\ndata: {path: d, label: y}\n")
    run = subprocess.Popen([sys.executable, "-m", "trainyard", "validate", str(spec)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run.stdout.close()                                   # the reader goes before anything is written
    err = run.stderr.read().decode()
    assert run.wait(timeout=120) == cli.EXIT_BROKEN_PIPE and err == "", err


def test_a_broken_connection_of_the_commands_own_is_a_failure_not_a_cut_off_reader(monkeypatch, capsys):
    """Only stdout's reader going away ends a command quietly (141); a BrokenPipeError from a socket of its own
    (a server that hung up) is a failure, said."""
    def hung_up(_args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_validate", hung_up)
    assert cli.main(["validate", "spec.yaml"]) == EXIT_FAILED
    assert "a connection was closed by the other end" in capsys.readouterr().err
