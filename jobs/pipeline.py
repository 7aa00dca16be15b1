"""The train job end to end: prepare → fit → bundle → evaluate. The CLI and tuning call these entries.

`prepare(spec)` runs ingest and preprocessing once (tuning shares the result across its trials); `fit` lives in
`jobs.train`; `export_bundle` writes, scores and publishes the bundle; `run_train` is `trainyard train`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from jobs import bundle as B
from jobs import replaced as REPLACED
from jobs.contracts import PreparedData
from jobs.early import start_early
from jobs.evaluate import evaluate, outside_labels_note, unseen_test_note
from jobs.metrics import CLASSES_SHOWN, classes_shown, per_class_scores, rest_line
from jobs.spec import JobSpec, dump_spec, storage_root
from jobs.train import TrainOutcome, check_cluster, fit, summary_table

__all__ = ["PreparedData", "prepare", "export_bundle", "run_train", "storage_root", "lineage",
           "print_ingest_summary", "format_metrics", "checkpoint_note"]


def keep_row_order() -> None:
    """Rows keep the order of the files and of the rows in them through every Ray Data step, here and in the
    trainers (Ray Train copies this driver setting into its ingest), so a seeded run trains the same model
    each time. Without it blocks come in the order they finish: three runs of one spec on 2 cores stopped
    early at epochs 9, 7 and 7 with different losses. Ray Data still runs each step in parallel."""
    import ray.data

    ray.data.DataContext.get_current().execution_options.preserve_order = True


def prepare(spec: JobSpec, progress: Callable[[str], None] = print) -> PreparedData:
    """Ingest the spec's data, fit preprocessing on the train split only (and, in the same pass, the train part
    of the bundle's reference profile), and pack every split for training."""
    from jobs import ingest as ING
    from jobs import preprocess as PP
    from jobs import profile as PROFILE
    from jobs import tabular as TAB

    t0 = time.time()
    keep_row_order()
    # The ingest result is materialized; a split of it is a filter that runs inside the pass that reads it.
    # So the train split is read twice (the fit's aggregate, then packing) without a copy of its own, and
    # the test split stays lazy: only the bundle's scoring reads it.
    if spec.data.is_image:
        from jobs import images as IMG
        # A pretrained backbone is resolved before reading: a wrong model.encoder stops at once.
        backbone = IMG.pretrained_backbone(spec.model)
        result = IMG.ingest_images(spec.data, progress=progress)
        train_raw = result.split(ING.TRAIN)
        pre, stats = IMG.fit_with_stats(train_raw, spec.data, classes=result.classes, backbone=backbone)
        reference = PROFILE.image_reference(pre, stats)
    elif spec.model.kind == "text":
        from jobs import text as TEXT
        encoder = TEXT.resolve_encoder(spec.model, spec.data)     # before reading: a wrong encoder stops at once
        result = ING.ingest(spec.data, progress=progress, text=True)
        train_raw = result.split(ING.TRAIN)
        pre, stats = TEXT.fit(train_raw, spec.data, spec.model, encoder, numeric=result.numeric,
                              categorical=result.categorical, text=result.text, task=result.task,
                              gaps=[c for c in result.text if result.missing.get(c)],
                              classes=result.classes)
        if note := TEXT.cut_note(pre):
            progress(f"[prepare] note: {note}")
        reference = PROFILE.text_bundle_reference(stats, pre, train_raw)
    else:
        result = ING.ingest(spec.data, progress=progress)
        train_raw = result.split(ING.TRAIN)
        pre, stats = TAB.fit_with_stats(train_raw, spec.data, numeric=result.numeric,
                                        categorical=result.categorical, task=result.task, classes=result.classes)
        reference = PROFILE.tabular_reference(stats, pre)
    check_auc_judgeable(spec, getattr(result, "class_counts", None) or {})
    if spec.decision is not None:
        from jobs import decision as DECISION
        DECISION.check(spec, pre.classes if pre.task == "classification" else None,
                       getattr(result, "class_counts", None) or {})
    for name in result.numeric if not spec.data.is_image else []:
        if name in reference.get("numeric", {}) and (note := PROFILE.two_populations(name, reference["numeric"][name])):
            progress(f"[prepare] note: {note}")
    if not spec.data.is_image:
        empty = TAB.empty_columns(stats, result.numeric, result.categorical)
        if empty:
            progress(f"[prepare] {', '.join(map(repr, empty))}: no value in any row of the train split, so every row "
                     "gets the same imputed value and the model learns nothing from it. Check the data, or leave "
                     "it out with features.exclude")
    train_ds = PP.apply(train_raw, pre)
    if spec.train.workers > 1:
        # Workers split the train split into contiguous runs of blocks, and rows often come grouped (an image
        # folder class by class, a table sorted by label or time): each worker would train, and keep BatchNorm
        # statistics, on a few classes only (2 workers on class-ordered images: 0.866 test accuracy, 1 worker
        # 0.952). One seeded shuffle here, shared by every tuning trial, mixes the shards; 1 worker shuffles
        # its own rows every epoch already.
        train_ds = train_ds.random_shuffle(seed=spec.train.seed)
    train_ds = train_ds.materialize()
    val_ds = PP.apply(result.split(ING.VAL), pre).materialize()
    test_raw = result.split(ING.TEST)
    progress(f"[prepare] {result.rows_read} rows read, {result.left_out()}; "
             f"split train/val/test = {result.split_rows['train']}/{result.split_rows['val']}/"
             f"{result.split_rows['test']}; {pre.feature_dim} packed features"
             + (f" ({pre.tabular_dim} of table columns, {pre.max_length} token ids)" if pre.kind == "text" else "")
             + f"; {time.time() - t0:.1f}s")
    return PreparedData(result, pre, train_ds, val_ds, test_raw, reference,
                        encoder=encoder.model_source if spec.model.kind == "text" else None)


def lineage(spec: JobSpec, prepared: PreparedData, outcome: TrainOutcome, **extra) -> dict:
    from jobs.version import versions
    now = dt.datetime.now(dt.timezone.utc)
    return {"name": spec.name, "version": now.strftime("%Y%m%d-%H%M%S"), "created_at": now.isoformat(),
            **versions(),
            "data": {"path": spec.data.path, "files": len(prepared.ingest.files),
                     "fingerprint": prepared.ingest.fingerprint, "rows_read": prepared.ingest.rows_read,
                     "rows_dropped_missing_label": prepared.ingest.rows_dropped_missing_label,
                     "split_rows": prepared.ingest.split_rows,
                     "split": {**spec.data.split.model_dump(exclude_none=True), **prepared.ingest.split_how}},
            "train": {"best_epoch": outcome.best_epoch, "epochs_run": len(outcome.history),
                      "use_gpu": outcome.use_gpu, "run_path": outcome.run_path},
            "trial_id": None, **extra}


def check_auc_judgeable(spec: JobSpec, class_counts: dict) -> None:
    """An AUC that picks the best epoch (train.early_stop.metric, tune.metric) needs two classes in the validation
    split; with one it was NaN every epoch, "best epoch -1", and the run still exited 0 with a bundle."""
    from jobs.ingest import DataError

    judged = [m for m in (spec.train.early_stop.metric if spec.train.early_stop else None,
                          spec.tune.metric if spec.tune else None) if m and "auc" in m]
    val = class_counts.get("val")
    if judged and val is not None and len(val) < 2:
        held = ", ".join(f"{c!r}: {n} row(s)" for c, n in val.items()) or "no rows"
        field = "tune.metric" if spec.tune and spec.tune.metric == judged[0] else "train.early_stop.metric"
        raise DataError(f"the validation split holds one class only ({held}), where {judged[0]} is undefined, so "
                        f"no epoch can be judged by it; judge by val_loss ({field}), or add rows, or raise "
                        "data.split.val")


def export_bundle(spec: JobSpec, prepared: PreparedData, outcome: TrainOutcome, *,
                  progress: Callable[[str], None] = print, **lineage_extra) -> tuple[Path | str, dict]:
    """Write a new bundle version from a finished training run, scored on the test split, and make it the
    latest: OUTPUT/bundles/<version>/, which OUTPUT/bundle then points to. Returns (its path, metrics: val and
    test as metrics.json holds them, and the bundle's cut-off as "decision" when the spec sets one).

    Written once, complete and atomically (`jobs.bundle.write`): the test split is scored through the bundle's
    own load/predict path while it is still a hidden folder, and it is published with both val and test
    metrics, and with its reference profile (`jobs.profile`: the train split's, and the bundle's predictions
    over the validation split). Earlier versions stay in OUTPUT/bundles; the progress line says how many.

    A URI output (s3://, gs://, ...) is staged in a local folder, scored there, then uploaded
    (`jobs.bundle.upload`: OUTPUT/bundles/LATEST changes once every file is there); the returned path is then
    the version's URI, which `jobs.bundle.load` accepts too.
    """
    remote = "://" in spec.output_dir
    staging = Path(tempfile.mkdtemp(prefix="trainyard-bundle-")) if remote else None
    output = staging if remote else Path(spec.output_dir)
    earlier = [] if remote else B.versions_of(output)
    replaced = None if remote else REPLACED.latest(output)
    dtypes = {f.name: str(f.type) for f in prepared.ingest.schema}
    metrics = {"val": outcome.val_metrics}

    def score_test_split(bundle: B.Bundle) -> dict:
        t0 = time.time()
        predictions: list = []
        unseen: dict = {}
        metrics["test"] = evaluate(bundle, prepared.test_raw, spec.data.label, predictions=predictions,
                                   unseen=unseen)
        progress(f"[evaluate] test split scored in {time.time() - t0:.1f}s")
        if note := unseen_test_note(unseen, prepared.ingest.split_rows["test"], prepared.ingest.split_how):
            progress(note)
        if note := outside_labels_note(predictions, getattr(prepared.ingest, "label_stats", None)):
            progress(note)
        return {"test": metrics["test"]}

    scored: list = []           # the staged bundle's validation scores: one pass for the cut-off and the profile

    def val_scores(bundle: B.Bundle) -> tuple:
        from jobs import profile as PROFILE
        if not scored:
            scored.append(PROFILE.validation_scores(bundle, prepared.val_ds))
        return scored[0]

    def profile(bundle: B.Bundle) -> dict:
        from jobs import profile as PROFILE
        return PROFILE.build(prepared.reference, bundle, prepared.val_ds, scores=val_scores(bundle))

    def decide(bundle: B.Bundle) -> Optional[dict]:
        """The spec's cut-off, chosen on the validation split by the staged bundle (`jobs.decision`); the val
        metrics at it replace the likelier-class ones (AUC and loss do not depend on it)."""
        if spec.decision is None or bundle.task != "classification":
            return None
        from jobs import decision as DECISION
        from jobs.metrics import classification_metrics
        pre = bundle.preprocessor
        y, proba = val_scores(bundle)
        positive = DECISION.positive_index(spec.decision, pre.classes, prepared.ingest.class_counts.get("train", {}),
                                           spec.data.label)
        pre.decision = DECISION.choose(spec.decision, pre.classes, positive, y, proba)
        progress(f"[decision] {DECISION.summary(pre.decision)}")
        if pre.decision.get("note"):
            progress(f"[decision] note: {pre.decision['note']}")
        answered = pre.decide(proba)
        at_cut = classification_metrics(y, proba, prefix="val_", y_pred=answered) if len(y) else {}
        metrics["val"] = {**metrics["val"], **{k: v for k, v in at_cut.items() if k not in ("val_auc", "val_loss")}}
        metrics["decision"] = pre.decision      # for the [evaluate] table's words; metrics.json holds val and test
        return {"val": metrics["val"]}

    try:
        version = B.write(output / B.POINTER, state_dict=outcome.best_state, model_config=outcome.model_config,
                          preprocessor=prepared.preprocessor, metrics={"val": outcome.val_metrics},
                          score=score_test_split, profile=profile, decide=decide, spec_yaml=dump_spec(spec),
                          lineage=lineage(spec, prepared, outcome, **lineage_extra), dtypes=dtypes,
                          progress=progress, taken=B.remote_names(spec.output_dir) if remote else None)
        if remote:
            uri = B.upload(version, spec.output_dir)
            _write_summary(spec.output_dir, prepared)
            progress(f"[bundle] version {version.name} uploaded to {uri}; "
                     f"{spec.output_dir.rstrip('/')}/{B.VERSIONS}/{B.LATEST} names it")
            return uri, metrics
        _write_summary(spec.output_dir, prepared)
        progress(f"[bundle] version {version.name} in {version}; {output / B.POINTER} points to it"
                 + (f" ({len(earlier)} earlier version(s) kept in {output / B.VERSIONS})" if earlier else ""))
        for note in REPLACED.notes(replaced, version, metrics, prepared.ingest.task, output / B.VERSIONS):
            progress(f"[bundle] note: {note}")
        return version, metrics
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)     # made by mkdtemp above: ours


def make_output_dir(path: str | os.PathLike) -> Path:
    """The run's local output folder, created if missing; BundleError naming the file when one stands there or
    above it (mkdir's FileExistsError named neither the field nor the fix)."""
    out = Path(path)
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise B.BundleError(f"output {str(path)!r}: {blocker} is a file, not a folder; choose another output folder "
                            "(it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_train(spec: JobSpec, *, progress: Callable[[str], None] = print) -> tuple[Path, dict]:
    """`trainyard train`: ingest → preprocess → train → evaluate → bundle. Returns (bundle path, metrics)."""
    if "://" not in spec.output_dir:
        # Before any work: a folder of the user's at OUTPUT/bundle would stop the run only at its end.
        B.check_pointer(make_output_dir(spec.output_dir) / B.POINTER)
    use_gpu = check_cluster(spec)           # before the data is read: a run the cluster cannot hold fails now
    run_name = "train-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    # The run starts now and waits for its data (`jobs.early`): its ~5 s of start-up overlap the preparation.
    early = start_early(spec, use_gpu=use_gpu, storage_path=storage_root(spec), run_name=run_name)
    try:
        # Not judged by the tune section a train does not use (its val_auc on one class stopped a train).
        prepared = prepare(spec.model_copy(update={"tune": None}) if spec.tune else spec, progress)
        print_ingest_summary(prepared, progress, spec.train.loss)
        outcome = (early.finish(prepared, progress) if early is not None else
                   fit(spec, prepared, storage_path=storage_root(spec), run_name=run_name, progress=progress))
    except BaseException as exc:
        if early is not None:
            early.abort()                   # nothing to hand over: the waiting run ends without training
        if isinstance(exc, KeyboardInterrupt) and (note := checkpoint_note(f"{storage_root(spec)}/{run_name}",
                                                                           finished=False)):
            progress(note)
        raise
    metric = spec.train.early_stop.metric if spec.train.early_stop else "val_loss"
    progress("[train] summary\n" + summary_table(outcome.history, metric, outcome.best_epoch))
    path, metrics = export_bundle(spec, prepared, outcome, progress=progress)
    progress(format_metrics(metrics, prepared.preprocessor.classes))
    if note := checkpoint_note(outcome.run_path):
        progress(note)
    return path, metrics


# Ray checkpoints of a finished run above this size are said, with how to delete them (a fine-tuned MiniLM
# keeps ~100-200 MB a checkpoint, two of them a run; a walkthrough's runs/ reached 1.4 GB in 25 minutes).
LARGE_CHECKPOINTS_MB = 100


def checkpoint_note(folder: str, finished: bool = True) -> Optional[str]:
    """A line on the Ray checkpoints a run (or search) left under local `folder`, when they are large, with how
    to delete them; None otherwise. A finished run's bundle holds the best weights; a `trainyard train` stopped
    by Ctrl-C (`finished` False) cannot be taken up again: each train starts afresh."""
    if not folder or "://" in str(folder) or not os.path.isdir(folder):
        return None
    found = [p for p in Path(folder).rglob("checkpoint_*") if p.is_dir()]
    total = sum(f.stat().st_size for p in found for f in p.rglob("*") if f.is_file()) / 2**20
    if total < LARGE_CHECKPOINTS_MB:
        return None
    if not finished:
        return (f"[train] note: the interrupted run left {len(found)} Ray checkpoint(s), {total:,.0f} MB, under "
                f"{folder}; `trainyard train` starts every run afresh, so nothing uses them: rm -r {folder}")
    return (f"[bundle] note: {len(found)} Ray checkpoint(s), {total:,.0f} MB, are kept under {folder}: they let "
            "a run that a worker's failure cut short go on; this one finished and its bundle holds the best "
            f"weights, so they may be deleted: find {folder} -name 'checkpoint_*' -type d -prune -exec rm -r {{}} +")


def _write_summary(output: str, prepared: PreparedData) -> None:
    """OUTPUT/summary.json: what ingest read, dropped and inferred (local folder or URI), for the bundle just
    published: a run interrupted or failed after its ingest left it describing other data than OUTPUT/bundle's."""
    text = json.dumps(prepared.ingest.summary(), indent=2, default=str)
    if "://" in output:
        import pyarrow.fs as pafs
        fs, root = pafs.FileSystem.from_uri(output.rstrip("/"))
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(root + "/summary.json") as f:
            f.write(text.encode())
    else:
        (Path(output) / "summary.json").write_text(text)


# A regression label whose skewness passes this is said to have a long tail (an exponential's is 2).
LONG_TAIL_SKEWNESS = 2.0


def print_ingest_summary(prepared: PreparedData, progress: Callable[[str], None], loss: str = "auto") -> None:
    """The `[data]` lines; `loss`: the spec's train.loss, for the note on a long-tailed regression label."""
    s = prepared.ingest
    kind = "image" if s.format == "images" else s.format
    lines = [f"[data] {s.rows_read} rows from {len(s.files)} {kind} file(s); "
             f"{s.rows_dropped_missing_label} row(s) dropped for a missing label ({s.label})",
             f"[data] task: " + (s.inferred["task"] if "task" in s.inferred else f"{s.task} (from data.task)")]
    if s.numeric or s.categorical or s.text:
        lines += [f"[data] numeric ({len(s.numeric)}): {', '.join(s.numeric) or '-'}",
                  f"[data] categorical ({len(s.categorical)}): {', '.join(s.categorical) or '-'}"]
    if s.text:
        lines.append(f"[data] text ({len(s.text)}): {', '.join(s.text)}")
    if s.missing:
        # Said, so that a column mostly empty is seen: counts over the rows read, the rows dropped for a missing
        # label among them. A number is imputed; a category's missing value is read as its unknown category.
        kinds = {"imputed": [c for c in s.missing if c not in s.categorical],
                 "the unknown category": [c for c in s.missing if c in s.categorical]}
        among = (f"; of the {s.rows_read:,} rows read, the {s.rows_dropped_missing_label:,} without a label too"
                 if s.rows_dropped_missing_label else "")
        lines += [f"[data] missing values ({how}{among}): " + ", ".join(f"{c} {s.missing[c]:,}" for c in columns)
                  for how, columns in kinds.items() if columns]
    if s.corrupt:
        shown = "; ".join(f"{c['path']} ({c['error']})" for c in s.corrupt[:20])
        lines.append(f"[data] {len(s.corrupt)} undecodable image(s) skipped: {shown}"
                     + (" …" if len(s.corrupt) > 20 else "") + " (all listed in summary.json)")
    inferred = {k: v for k, v in s.inferred.items() if k != "task"}
    if inferred:
        lines.append("[data] inferred: " + "; ".join(f"{k} → {v}" for k, v in inferred.items()))
    if s.excluded_columns:
        lines.append(f"[data] excluded (data.features.exclude): {', '.join(map(repr, s.excluded_columns))}")
    if s.unused_columns:            # of class folders: the files beside them, read as column names before
        lines.append(f"[data] files outside the class folders, not used: {', '.join(s.unused_columns)}"
                     if s.format == "images" else f"[data] not used (not listed in data.features): "
                     f"{', '.join(s.unused_columns)}")
    if stats := getattr(s, "label_stats", None):
        lines.append(f"[data] label {s.label!r}: {stats['min']:,.4g} to {stats['max']:,.4g}, median {stats['median']:,.4g}, "
                     f"99th percentile {stats['p99']:,.4g}, mean {stats['mean']:,.4g}")
        if stats["skewness"] > LONG_TAIL_SKEWNESS and loss in ("auto", "mse"):
            lines.append(f"[data] note: label {s.label!r} has a long tail (skewness {stats['skewness']:.1f}): the "
                         "squared error trained on (train.loss: auto, mse) weighs its largest values most, and the "
                         "many small ones less; train.loss: huber weighs large errors less")
    if s.class_counts:
        lines.append("[data] classes per split: " + "; ".join(f"{k} {_most(v)}" for k, v in s.class_counts.items()))
    progress("\n".join(lines))


def _most(counts: dict[str, int], shown: int = 10) -> str:
    """A split's rows per class, the `shown` with most rows and a count of the rest (347 classes made a line of
    347 entries; summary.json keeps them all)."""
    if len(counts) <= shown + 1:
        return str(counts)
    top = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:shown])
    return f"{str(top)[:-1]}, ... {len(counts) - shown:,} more ({sum(counts.values()) - sum(top.values()):,} rows)}}"


# Shown per class, under the averages, up to this many classes: on an imbalanced label the macro averages hide
# the rare class ("recall 0.62" reads as "62% of defaulters caught" when it is 38%).
def format_metrics(metrics: dict, classes: Optional[list] = None) -> str:
    """The val/test table; precision, recall and F1 are macro averages (every class counts the same), said so;
    with `classes`, each class's own precision, recall and F1 on the test split, from its confusion matrix."""
    lines = ["[evaluate]                  " + "".join(f"{k:>12}" for k in ("val", "test"))]
    keys = [k for k in metrics.get("test", {}) if k != "confusion_matrix"]
    for k in keys:
        v, t = metrics["val"].get("val_" + k, metrics["val"].get(k)), metrics["test"].get(k)
        fmt = lambda x: f"{x:>12.4f}" if isinstance(x, (int, float)) else f"{'-':>12}"
        shown = f"{k} (macro)" if k in ("precision", "recall", "f1") else k
        lines.append(f"[evaluate] {shown:<18}" + fmt(v) + fmt(t))
    cm = metrics.get("test", {}).get("confusion_matrix")
    if cm is not None:
        named = bool(classes) and len(classes) == len(cm)
        if len(cm) <= CLASSES_SHOWN:       # names quoted: 'Home, Kitchen' is one class, '  Books' keeps its spaces
            order = f"; classes {', '.join(map(repr, classes))}" if named else ""
            lines.append(f"[evaluate] test confusion matrix (rows = true{order}): {cm}")
        else:
            lines.append(f"[evaluate] test confusion matrix: {len(cm)} x {len(cm)}, in the bundle's metrics.json "
                         "(test.confusion_matrix: rows = true, in the order of schema.json's label.classes)")
        if named:
            lines += _per_class(cm, classes)
        lines += one_class_warning(cm, classes, metrics.get("decision"))
        lines += _target_missed(cm, metrics.get("decision"))
        lines += flagged_lines(cm, metrics.get("decision"), "[evaluate] test")
    return "\n".join(lines)


def flagged_lines(cm, decision: Optional[dict], where: str) -> list[str]:
    """What a binary cut-off does to the rows (`cm`: a confusion matrix): how many it flags, how many of the
    positives it catches and how many of the flagged are positives, against the positives' share (a risk analyst
    read a macro F1 and an accuracy of 0.57, where 45% of applicants flagged caught 81% of the defaults at 2.0x
    their base rate). [] without a decision."""
    if not decision or len(cm) != 2:
        return []
    i, rows = int(decision["positive_index"]), sum(map(sum, cm))
    flagged, positives, hit = sum(row[i] for row in cm), sum(cm[i]), cm[i][i]
    if not rows or not positives:
        return []
    base, caught = positives / rows, f"{hit / flagged:.3f}" if flagged else "-"
    lift = f", {hit / flagged / base:.1f}x the base rate {base:.1%}" if flagged else f"; base rate {base:.1%}"
    return [f"{where} at the cut-off: {decision['positive']!r} for {flagged:,} of {rows:,} rows ({flagged / rows:.0%}); "
            f"they hold {hit:,} of the {positives:,} {decision['positive']!r} rows (recall {hit / positives:.3f}), "
            f"precision {caught}{lift}"]


def _target_missed(cm: list[list[int]], decision: Optional[dict]) -> list[str]:
    """A cut-off chosen for a recall or precision on the validation split that falls short of it on the test
    split, said (a credit policy of "at least 0.85" met 0.854 on validation, 0.842 on test, with no word), with
    whether chance explains it: asked for more and more (0.9, 0.95, 1), a walkthrough's test recall stayed 18 of 22
    while each stricter rule flagged more rows (the advice said "say min_recall 1" at min_recall 1)."""
    from jobs.decision import shortfall, shortfall_chance

    short = shortfall(cm, decision)
    if short is None:
        return []
    what, value, hit, of = short
    target = float(decision["target"])
    chance = shortfall_chance(hit, of, target)
    said = (f"[evaluate] note: on the test split the cut-off's {what} of {decision['positive']!r} is {value:.3f} "
            f"({hit} of {of}), below the {decision['rule']} it was chosen for on the validation split")
    on_val = (decision.get("val") or {}).get(what)
    if on_val is not None and on_val < target - 1e-12:
        # No cut-off reached it on the validation split either (the highest one was used): asking for more could
        # not help (the note said "say min_precision 0.55" where 0.5 was out of reach).
        return [f"{said}; no cut-off reached it there either ({what} {on_val:.3f} at best): the model cannot "
                f"separate {decision['positive']!r} rows this well; a better model (features, train.epochs, a "
                f"search) or a lower min_{what}"]
    if chance >= 0.05:
        return [f"{said}: with {of} to count, a cut-off that meets {target:g} reads this low in {chance:.0%} of "
                "samples; more rows in the validation and test splits (data.split) would tell"]
    stricter = min(target + 0.05, 1.0)
    return [f"{said}, lower than chance explains (p {chance:.1g}): "
            + (f"a cut-off that just meets a target on one sample often falls short on another; for a margin ask "
               f"for more (say min_{what} {stricter:g}) or give the validation split more rows (data.split.val)"
               if stricter > target else
               f"no cut-off chosen on the validation split reaches {target:g} on the test split: the model ranks "
               f"some {decision['positive']!r} rows below rows of the other class; a better model (features, "
               "train.epochs, a search) rather than a stricter rule")]


def one_class_warning(cm: list[list[int]], classes: Optional[list], decision: Optional[dict] = None) -> list[str]:
    """A model that predicts one class for every test row (a 10% minority never flagged, at an accuracy of 0.90
    that looks good): said, with what to change. [] otherwise."""
    predicted = [j for j in range(len(cm)) if sum(row[j] for row in cm)]
    rows = sum(map(sum, cm))
    if len(predicted) != 1 or len(cm) < 2 or not rows:
        return []
    name = lambda i: repr(str(classes[i])) if classes and len(classes) == len(cm) else f"#{i}"
    others = [i for i in range(len(cm)) if i != predicted[0] and sum(cm[i])]
    if not others:
        return []
    missed = ", ".join(f"{name(i)} ({sum(cm[i]) / rows:.0%} of the rows)" for i in others)
    said = f"[evaluate] warning: the model predicts {name(predicted[0])} for every test row; it never predicts {missed}."
    if decision:
        from jobs.decision import cut_text
        return [f"{said} It answers by the cut-off decision {cut_text(decision)}, which puts every row on one "
                "side: loosen the rule, or give a fixed decision.threshold"]
    present = [sum(row) for row in cm if sum(row)]
    if max(present) < RARER * min(present):
        # Every class about as common as every other (a 50/50 defect set): weighing classes changes nothing.
        return [f"{said} The classes are about as common as each other: the model has not learned to tell them "
                "apart. Train longer (train.epochs), try another train.lr (a search: trainyard tune), or check that "
                "the features carry the label"]
    return [f"{said} Judge epochs and trials by val_f1 or val_auc (train.early_stop.metric, tune.metric) rather "
            "than val_accuracy or val_loss, and weigh the rarer classes up with train.class_weight: balanced"
            + ("; for two classes, a cut-off chosen for the rare one's recall or precision (decision: "
               "{min_recall: 0.8}) answers by its probability rather than the likelier class" if len(cm) == 2 else "")]


# Classes are about as common as each other when the commonest has fewer than this many times the rarest's rows.
RARER = 1.5


def _per_class(cm: list[list[int]], classes: list) -> list[str]:
    """Each class's scores on the test split: of the CLASSES_SHOWN with the most rows, and the lowest recalls of
    the rest, where there are more."""
    precision, recall, f1 = per_class_scores(cm)
    held = [sum(row) for row in cm]
    shown, rest = classes_shown(held)
    lines = [f"[evaluate] test class {str(classes[i])!r}: precision {precision[i]:.4f}  recall {recall[i]:.4f}  "
             f"f1 {f1[i]:.4f}  ({held[i]} of {sum(held)} rows)" for i in (shown if rest else range(len(cm)))]
    return lines + ([rest_line([str(c) for c in classes], rest, held, list(recall))] if rest else [])
