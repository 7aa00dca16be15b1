"""What `--resume` continues, found and checked from the experiment's own record (OUTPUT/ray/tune-<stamp>/
trainyard.record) without Ray: so `trainyard tune SPEC --resume` with nothing to resume, or with a changed spec,
is refused in a second, before Ray starts, rather than after it (`check`). Ray Tune's own state is judged by
`tuning.experiment` once Ray is up."""
from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from pathlib import Path
from typing import Iterator, Optional

from jobs.spec import SEARCH_AXES, JobSpec, SpecError, storage_root
from tuning.plan import TuneInputError
from tuning.space import trial_count

EXPERIMENT_PREFIX = "tune-"
# The experiment's record (JSON). Not named *.json: Ray Tune's restore copies the experiment folder's *.json and
# *.pkl into its staging folder and uploads them back as it syncs (ray/tune/execution/experiment_state.py), so a
# resumed driver SIGKILLed mid-upload left trainyard.json empty (CI, 2026-12-07). Experiments of an earlier
# trainyard have LEGACY_EXPERIMENT_FILE, read where the record is not there.
EXPERIMENT_FILE = "trainyard.record"
LEGACY_EXPERIMENT_FILE = "trainyard.json"
ENDED_DIR = "ended"        # EXPERIMENT/ended/<id>.json: written by the driver when Tune ends a trial
# Spec sections a resumed experiment must share with the one that started it; output and serve may change.
_SAME_ON_RESUME = ("data", "model", "train", "tune")


def check(spec: JobSpec) -> None:
    """Before Ray starts: refuse `--resume` when the spec's output holds no experiment trainyard started, none
    this spec started, or only a finished one (TuneInputError, SpecError; bad input, exit 2)."""
    started_experiment(storage_root(spec), spec)


def new_experiment(root: str) -> Path:
    """A new experiment's folder under `root`, named by the time, made here and by no one else: two searches
    started in the same second to one output shared a folder (both searches' trials, one record of them)."""
    Path(root).mkdir(parents=True, exist_ok=True)
    stamp = EXPERIMENT_PREFIX + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        path = Path(root) / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def start_experiment(root: str, spec: JobSpec, fingerprint: str, metric: str, mode: str) -> tuple[Path, Optional[str]]:
    """A new search's folder, with its record; and a line when an earlier search under `root` drew from the same
    seed and search space (`repeated_draw`), else None."""
    repeated = repeated_draw(root, spec)
    experiment = new_experiment(root)
    write_record(experiment, {"spec": spec.model_dump(mode="json"), "fingerprint": fingerprint, "metric": metric,
                              "mode": mode, "started_at": dt.datetime.now(dt.timezone.utc).isoformat()})
    return experiment, repeated


def repeated_draw(root: str, spec: JobSpec) -> Optional[str]:
    """A line saying that the newest earlier search under `root` had this search's space and seed, so that its
    configurations are drawn again: a search is seeded (tune.seed, by default train.seed) so that a spec gives the
    same trials, and a user who starts a second search of the same spec for more of the space got the first one's
    trials again, trained again, without a word. None for a grid (every combination, whatever the seed)."""
    if spec.tune.search == "grid" or not Path(root).is_dir():
        return None
    now = spec.model_dump(mode="json")
    for path in sorted(Path(root).glob(EXPERIMENT_PREFIX + "*"), reverse=True):
        try:
            earlier = json.loads(record_file(path).read_text())["spec"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        then = (earlier.get("tune") or {}).get("samples")
        if _draw(earlier) == _draw(now):
            # Each trial's configuration is the seeded generator's next draw: a search of more samples begins
            # with the same ones (Tune's BasicVariantGenerator, checked on Ray 2.60).
            n = spec.tune.samples
            drawn = ("Optuna's first configuration(s)" if spec.tune.search != "random" else
                     f"the same {n} configuration(s)" if then == n else
                     f"its {n} configuration(s), the first {n} of that search's {then}," if then and then > n else
                     f"the first {then or 0} of its {n} configuration(s) (that search had {then})")
            return (f"[tune] the search space and seed ({_seed(now)}) are those of the earlier search {path.name}: "
                    f"{drawn} are drawn again; set tune.seed to another number to draw others")
    return None


def _draw(spec: dict) -> tuple:
    """What a search's configurations are drawn from: the search, its axes and its seed (not its budget, scheduler
    or metric: those change what the trials do, not which are drawn)."""
    tune = spec.get("tune") or {}
    return tune.get("search"), {a: _compact_all(tune.get(a)) for a in SEARCH_AXES}, _seed(spec)


def _seed(spec: dict):
    tune_seed = (spec.get("tune") or {}).get("seed")
    return tune_seed if tune_seed is not None else (spec.get("train") or {}).get("seed")


def _compact_all(value):
    """`value` with every unset (None) field left out at any depth: a record written before a field was added to
    the spec lacks it."""
    if isinstance(value, dict):
        return {k: _compact_all(v) for k, v in value.items() if v is not None}
    return value


def write_record(experiment: Path, record: dict) -> None:
    """The experiment's own record, replaced whole in one rename (see EXPERIMENT_FILE)."""
    tmp = experiment / (EXPERIMENT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, experiment / EXPERIMENT_FILE)


def record_file(experiment: Path) -> Path:
    path = experiment / EXPERIMENT_FILE
    return path if path.is_file() or not (experiment / LEGACY_EXPERIMENT_FILE).is_file() else \
        experiment / LEGACY_EXPERIMENT_FILE


def read_record(experiment: Path) -> dict:
    try:
        return json.loads(record_file(experiment).read_text())
    except (OSError, ValueError) as exc:
        raise TuneInputError(f"--resume: {record_file(experiment)} is unreadable ({exc}): this experiment cannot be "
                             "continued; drop --resume to start a new search") from None


def mark_finished(experiment: Path, bundle: object) -> None:
    """Record in the experiment's own file that its search ended and which bundle it made: not one to resume."""
    record = read_record(experiment)
    record.update(finished_at=dt.datetime.now(dt.timezone.utc).isoformat(), bundle=str(bundle))
    write_record(experiment, record)


def started_experiment(root: str, spec: JobSpec) -> Path:
    """The newest experiment under `root` (OUTPUT/ray) that this spec started: a colleague's newer search of
    other settings in the same output is passed over, not taken for a changed spec. Refused when this spec's
    newest search finished (nothing to resume), or no experiment there is this spec's (the newest one's
    differences are said)."""
    candidates = sorted(Path(root).glob(EXPERIMENT_PREFIX + "*"), reverse=True) if Path(root).is_dir() else []
    ours = [p for p in candidates if record_file(p).is_file()]
    for path in ours:
        try:
            check_same_spec(path, spec)
        except SpecError:
            continue
        record = read_record(path)
        if record.get("finished_at"):
            raise TuneInputError(f"--resume: the newest search of this spec, {path.name}, finished at "
                                 f"{record['finished_at'][:19]} and made {record.get('bundle')}: nothing to resume; "
                                 "drop --resume to start a new search")
        if made := _made_by_earlier(path, spec):
            raise TuneInputError(f"--resume: the newest search of this spec, {path.name}, ended all its "
                                 f"{trial_count(spec)} trial(s) and made bundle {made} (an earlier trainyard, which "
                                 "recorded no end of a search): nothing to resume; drop --resume to start a new search")
        return path
    if ours:
        check_same_spec(ours[0], spec)          # raises: what differs from the newest search here
    raise TuneInputError(f"--resume: no tuning experiment to continue under {root} "
                         f"({len(candidates)} folder(s) named {EXPERIMENT_PREFIX}*, none started by trainyard); "
                         "drop --resume to start a new search")


def _made_by_earlier(experiment: Path, spec: JobSpec) -> Optional[str]:
    """The bundle a search finished by a trainyard before 2026-12-08 made (it kept no `finished_at`), else None:
    every trial it plans has ended (ended/, which errored trials do not reach) and a version in OUTPUT/bundles
    names the experiment. Resumed, it trained nothing and wrote that bundle again as a new version. One of the two
    alone is no end: a bundle of an interrupted search's best so far, or a search stopped before its bundle."""
    ended = experiment / ENDED_DIR
    if not ended.is_dir() or len(list(ended.glob("*.json"))) < trial_count(spec):
        return None
    for lineage in sorted((experiment.parent.parent / "bundles").glob("*/lineage.json")):
        try:
            tune = json.loads(lineage.read_text()).get("tune") or {}
        except (OSError, ValueError):
            continue
        if Path(str(tune.get("experiment") or "")).name == experiment.name:
            return lineage.parent.name
    return None


def check_same_spec(experiment: Path, spec: JobSpec) -> None:
    started = _data_paths_absolute(read_record(experiment)["spec"])
    now = _data_paths_absolute(spec.model_dump(mode="json"))
    pre = (started.get("data") or {}).get("preprocess") or {}
    if pre.get("impute") != "constant" and pre.get("fill_value") == 0.0:
        # Written before fill_value went with impute: constant alone (it was 0.0, and unused, by default).
        pre["fill_value"] = None
    changed = [f"{key}: {_compact(a)!r} → {_compact(b)!r}" for section in _SAME_ON_RESUME
               for key, a, b in _diff(started.get(section), now.get(section), section)]
    if changed:
        raise SpecError([f"--resume: the spec changed since experiment {experiment.name} started ("
                         + "; ".join(changed[:6]) + "). A resumed search must train every trial the same way: "
                         "undo the change, or drop --resume to start a new search"])


def check_same_data(experiment: Path, fingerprint: str) -> None:
    """Once the data is read: refuse a resume whose data is not what the experiment started on."""
    started = read_record(experiment)["fingerprint"]
    if started != fingerprint:
        raise TuneInputError(f"--resume: the data changed since experiment {experiment.name} started (fingerprint "
                             f"{started[:12]} → {fingerprint[:12]}), so resumed trials would not see the splits "
                             "the finished ones saw; restore the data, or drop --resume to start a new search")


def _data_paths_absolute(spec: dict) -> dict:
    """`spec` with data.path's local paths absolute (from this folder), URIs as given: a search `trainyard
    submit` started on a cluster on this machine recorded the absolute path submit made of a relative one, which
    `trainyard tune SPEC --resume` here was refused for as a changed spec."""
    from cluster.storage import as_read_here

    data = spec.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), (str, list)):
        paths = data["path"]
        data["path"] = [as_read_here(p) for p in paths] if isinstance(paths, list) else as_read_here(paths)
    return spec


def _compact(value):
    """A spec value as the user wrote it: a search axis {'loguniform': [..], 'uniform': None, ...} without its
    unset forms."""
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


def _diff(a, b, prefix: str) -> Iterator[tuple[str, object, object]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _diff(a.get(key), b.get(key), f"{prefix}.{key}")
    elif a != b:
        yield prefix, a, b
