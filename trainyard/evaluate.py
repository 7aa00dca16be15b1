"""`trainyard evaluate BUNDLE [BUNDLE ...] --data FILE [--by COLUMN]`: score bundles on the same labelled rows.

Each version of a model scored its own test split when it was written; a retrain on other data or features
scored other rows, so its test score cannot rank it against the version it replaces. This scores every bundle
given on one table (a .csv, .parquet or .jsonl file, or a folder of .parquet shards, as `trainyard predict`
reads them) through each bundle's own prediction path (`jobs.evaluate.score`: its preprocessing, its cut-off),
side by side, and with `--by COLUMN` per value of a column (a machine type, a region): the slice a new version
got worse on. An image model scores a folder laid out as training reads one (<folder>/<label>/<image file>; one
class folder will do) or a table with its image column and the label. In this process, without Ray: a table
that fits in memory.
"""
from __future__ import annotations

import argparse
import math

# Values of a --by column shown, most rows first (the rest are counted in one line).
MOST_SLICES = 20
# Slices of fewer rows than this say little; a --by column whose typical slice is smaller is said to be one.
MIN_SLICE_ROWS = 20
# Averages over the classes, every class counting the same (as the [evaluate] table of train says).
_MACRO = ("precision", "recall", "f1")


def register(subparsers, kit) -> None:
    """Add `evaluate` to the `trainyard` subcommands."""
    p = subparsers.add_parser("evaluate", help="score bundles (versions) side by side on the same labelled rows",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", nargs="+", metavar="BUNDLE",
                   help="bundle folders or run outputs (OUTPUT/bundles/VERSION for an older version)")
    p.add_argument("--data", required=True, help="labelled rows: .csv, .parquet or .jsonl, or a folder of .parquet "
                   "or of .csv shards; for an image model also a folder of <label>/<image file>")
    p.add_argument("--by", default=None, metavar="COLUMN", help="also score each value of this column apart")
    p.add_argument("--held-out", action="store_true",
                   help="score only the rows no bundle trained or validated on, by each one's split (a split by "
                        "group or by time; the data must hold its column)")
    p.set_defaults(func=lambda args: cmd_evaluate(args, kit.progress))


def cmd_evaluate(args, progress) -> int:
    from jobs.bundle import BundleError, load, resolve
    from jobs.evaluate import score
    from serving.tables import TableError, numbers_read_as_text, read_used

    bundles = [load(resolve(given)) for given in args.bundles]
    label = bundles[0].preprocessor.label
    others = [b for b in bundles[1:] if (b.task, b.preprocessor.label, bool(b.schema.get("image")))
              != (bundles[0].task, label, bool(bundles[0].schema.get("image")))]
    if others:
        raise BundleError(f"the bundles predict different things: {args.bundles[0]} {bundles[0].task} of {label!r}, "
                          f"{others[0].path} {others[0].task} of {others[0].preprocessor.label!r}"
                          + (" from images" if others[0].schema.get("image") else "")
                          + "; compare versions of one model")
    table = (_image_rows(bundles[0], args.data, progress) if bundles[0].schema.get("image")
             else read_used(args.data, _used_columns(bundles, label, args.by)))
    _check_columns(table, args.data, label, args.by)
    _renamed(bundles, table, args.data, label, args.by)
    if not bundles[0].schema.get("image"):
        # A cell that is no number ('?', '32,293') made its whole column text; scored, every row of it was imputed
        # without a word, where `predict` refuses the file: the same refusal, with the lines, by each version's
        # own features (a column one version takes as a number and another as a category stays as read).
        for b in bundles:
            try:
                numbers_read_as_text(table[[f["name"] for f in b.schema["features"] if f["name"] in table.columns]],
                                     b.schema["features"])
            except TableError as exc:
                raise TableError(f"{args.data}: {exc}") from None
    unlabelled = int(table[label].isna().sum())
    table = table[table[label].notna()].reset_index(drop=True)
    progress(f"[evaluate] {len(table):,} row(s) of {args.data} (label {label!r})"
             + (f"; {unlabelled:,} without a label left out" if unlabelled else ""))
    if not len(table):
        raise BundleError(f"{args.data}: no row has a label in column {label!r}; nothing to score")
    names = _names(bundles, args.bundles)
    for i, b in enumerate(bundles):     # a run folder resolves to its newest version: the candidate, twice
        if (twice := next((j for j in range(i) if bundles[j].path.resolve() == b.path.resolve()), None)) is not None:
            progress(f"[evaluate] warning: {args.bundles[twice]} and {args.bundles[i]} are the same bundle "
                     f"({b.path}): its columns are one model scored twice; an older version is OUTPUT/bundles/VERSION")
    table = _held_out(names, bundles, table, label, args.held_out, progress)
    for name, bundle in zip(names, bundles):
        for note in _input_notes(bundle, table):
            progress(f"[evaluate] note: {name}: {note}")
    if bundles[0].task == "classification":
        _unscored_labels(bundles[0], table, label, args.data, progress)
    scores = [_scored(b, table, label, args.data, score) for b in bundles]
    for line in _table(names, scores, bundles):
        progress(line)
    for line in _answers(names, scores, bundles):
        progress(line)
    if args.by:
        for line in _slices(names, bundles, table, label, args.by, args.data, score):
            progress(line)
    return 0


def _renamed(bundles: list, table, data: str, label: str, by) -> None:
    """Refuse a feature without a column where the rows hold one spelt nearly so ('Income' for 'income'): scored,
    it was imputed for every row, a note beside a score table that looked as any other, where `predict` (and a
    bundle's own `predict`) refuse the same rows with the name. By predict's rule (`jobs.fitted.near_feature`),
    among the columns no bundle takes and that are not the label, --by or a split's: another version's feature
    ('score_v2' for 'score_v1') or a split's column ('patient_id' for 'patient_age') is not a misspelling, nor is a
    name that differs in its digits alone ('sensor_7' for 'sensor_3')."""
    import re

    from jobs.bundle import BundleError
    from jobs.fitted import near_feature

    taken = {label, by} | {f["name"] for b in bundles for f in b.schema["features"]}
    for b in bundles:
        split = (b.lineage.get("data") or {}).get("split") or {}
        taken |= {split.get("by"), split.get("order")}
    unused = {str(c).lower(): str(c) for c in table.columns if c not in taken}
    for b in bundles:
        for name in (f["name"] for f in b.schema["features"] if f["name"] not in table.columns):
            near = near_feature(name, unused)
            if near and re.sub(r"\d", "", near.lower()) != re.sub(r"\d", "", name.lower()) or \
                    near and near.lower() == name.lower():
                raise BundleError(f"{data}: no column {name!r}, a feature of {b.path}; the rows have {near!r}: did "
                                  "you mean it? Rename the column (scored without it, the model would impute it for "
                                  "every row); to score it so, drop the column")


def _used_columns(bundles: list, label: str, by) -> set[str]:
    """The columns evaluate reads: the label, every bundle's features, --by, and the columns a bundle's split
    places rows by. Shards may differ in others (an operator's note in one month's file; these were refused);
    Parquet shards that differ in one of these are refused (one lacking a feature was imputed whole)."""
    used = {label, *([by] if by else [])}
    for b in bundles:
        used |= {f["name"] for f in b.schema["features"]}
        split = (b.lineage.get("data") or {}).get("split") or {}
        used |= {split[k] for k in ("by", "order") if isinstance(split.get(k), str)}
    return used


def _held_out(names: list[str], bundles: list, table, label: str, held_out: bool, progress):
    """Rows a bundle trained or chose its epochs on, said per bundle where its split tells them (by group: the
    table's group column placed by the bundle's cuts; by time: its rows before the test split's start): a model
    split by patient, scored on later visits of its own patients, read better than one split by time, in its
    favour. With `held_out`, the table cut to the rows every bundle held out (its test split)."""
    import numpy as np

    from jobs.bundle import BundleError
    from jobs.placed import GAP, NEW, TEST, TRAIN, VAL, splits_of, unplaced

    keep = np.ones(len(table), dtype=bool)
    for name, bundle in zip(names, bundles):
        split = (bundle.lineage.get("data") or {}).get("split") or {}
        if bundle.schema.get("image") and split.get("by"):     # an image bundle of before the mark: keyed otherwise
            split = {**split, "keyed": "image"}
        placed = splits_of(split, table, label)
        if placed is None:
            if held_out:
                raise BundleError(f"--held-out: {name} was {unplaced(split, table)}; or score it on rows kept out of "
                                  "its data.path")
            if split.get("by") or split.get("order"):     # said: no note read as "none of them is one it trained on"
                progress(f"[evaluate] note: {name}: which of these rows it trained or validated on cannot be told: it "
                         f"was {unplaced(split, table)}")
            continue
        if split.get("order") and (odd := int(((placed == -1) & table[split["order"]].notna().to_numpy()).sum())):
            progress(f"[evaluate] note: {name}: {odd:,} row(s) hold a {split['order']!r} that is not a time or number "
                     "it can place (dates are read in ISO form, 2024-07-15): neither counted nor, with --held-out, "
                     "scored")
        keep &= np.isin(placed, (TEST, NEW))
        seen, checked = int(np.isin(placed, (TRAIN, VAL)).sum()), int((placed >= 0).sum())
        if seen:
            # A bundle that kept no list of its groups (an earlier trainyard, or over jobs.splits.SEEN_MAX) places a
            # group by its key's hash alone: a new one falls in the train split's range as often as a seen one.
            how = (f"of {split['by']!r} groups it trained or validated on" + (
                       "" if "seen" in split else " or whose keys fall where those did (it kept no list of the "
                       "groups it saw, so new groups cannot be told apart: train it again to keep one)")
                   if split.get("by") else
                   f"of its train or validation split, before its test split ({split['order']!r} from "
                   f"{split['from'].get('test')})")
            span = split.get("gap") if isinstance(split.get("gap"), str) else f"{split.get('gap') or 0:g}"
            gap = (f"; {int((placed == GAP).sum()):,} more in its data.split.gap {span}, in no split"
                   if (placed == GAP).any() else "")
            progress(f"[evaluate] note: {name}: {seen:,} of the {checked:,} row(s) it can place are {how} "
                     f"({int((placed == TRAIN).sum()):,} train, {int((placed == VAL).sum()):,} validation{gap}): its "
                     "scores there flatter it" + ("" if held_out else "; --held-out scores the bundles on the rows "
                                                  "none of them trained or validated on"))
    if not held_out:
        return table
    if not keep.any():
        raise BundleError(f"--held-out: none of the {len(table):,} row(s) is in every bundle's test split (or of a "
                          "group it never saw); give rows of later times or other groups")
    progress(f"[evaluate] --held-out: {int(keep.sum()):,} of {len(table):,} row(s) are in every bundle's test "
             "split or of groups it never saw: scored on those")
    return table[keep].reset_index(drop=True)


def _image_rows(bundle, path: str, progress):
    """An image model's labelled rows: from a folder laid out as training reads one (<path>/<label>/<image file>,
    the folder's name the label), with each image's `file`; or from a table (.parquet, as `predict` reads it) with
    the image column and the label. Images that cannot be decoded are left out, and named."""
    import os

    import pandas as pd

    from jobs.bundle import BundleError
    from jobs.images import decode, folder_layout, without_images_note
    from serving.tables import read_table

    pre = bundle.preprocessor
    root = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(root) and not any(f.endswith(".parquet") for f in os.listdir(root)):
        files, labels, _ = folder_layout(root, field="--data", min_classes=1)
        if note := without_images_note(root, labels):
            progress(f"[evaluate] note: {note}")
        table = pd.DataFrame({"file": files, pre.column: [open(f, "rb").read() for f in files], pre.label: labels})
    else:
        table = read_table(path)
        if pre.column not in table.columns:
            raise BundleError(f"{path}: no column {pre.column!r}, the image the model reads (its columns: "
                              f"{', '.join(map(repr, map(str, table.columns[:30])))}); or give a folder of "
                              "<label>/<image file>")
    bad, pixels = {}, []
    for i, value in enumerate(table[pre.column].tolist()):
        try:
            pixels.append(decode(value, tuple(pre.size), pre.channels))
        except ValueError as exc:
            pixels.append(None)
            bad[i] = f"{table['file'][i] if 'file' in table.columns else f'row {i}'}: {exc}"
    # Decoded once: the pixels go on to the bundle, which takes them as they are (it decoded every image again).
    table[pre.column] = pixels
    if bad:
        progress(f"[evaluate] note: {len(bad):,} of {len(table):,} image(s) cannot be decoded and were left out: "
                 + "; ".join(list(bad.values())[:5]) + (" ..." if len(bad) > 5 else ""))
        table = table.drop(index=list(bad)).reset_index(drop=True)
    return table


def _unscored_labels(bundle, table, label: str, path: str, progress) -> None:
    """Rows whose label is no class of the model are not scored: said before the scores (it came after them).
    Where such a label is a class written another way ('y ' for 'Y'), refused: half the defaults of a file went
    unscored, and the recall of the rest read 1.0."""
    from jobs.bundle import BundleError
    from jobs.fitted import canonical
    from jobs.spelling import how_alike, look_alike

    classes = bundle.preprocessor.classes
    known = {canonical(c) for c in classes}
    # As objects: a dictionary-encoded Parquet label reads as a Categorical, whose value_counts lists every
    # category, those of no row too (the model's own classes came out "strange", with 0 rows).
    labels = table[label].astype(object)
    strange = labels[[canonical(v) not in known for v in labels]].value_counts()
    if not len(strange):
        return
    counts = ", ".join(f"{v!r}: {n:,}" for v, n in strange.head(5).items())
    alike = [g for g in look_alike([str(c) for c in classes] + [str(v) for v in strange.index])
             if set(g) & {str(c) for c in classes} and set(g) & {str(v) for v in strange.index}]
    if strange.sum() == len(table):                 # nothing to score is no score of 0
        values = labels.astype(str).unique().tolist()
        numeric = all(v.lstrip("-").replace(".", "", 1).isdigit() for v in values)
        codes = sorted(values, key=float if numeric else str)     # '2' before '10'
        given = codes[:10]
        raise BundleError(f"{path}: no row's label is a class of the model: column {label!r} holds "
                          f"{', '.join(map(repr, given))}, the model's classes are "
                          f"{', '.join(repr(str(c)) for c in classes)}" + (
                              f" ({' and '.join(map(repr, alike[0]))} {how_alike(alike[0])}: write the labels as "
                              "the model's classes)" if alike else
                              # Codes for the classes (0/1 for no/yes): the fix, in the classes' order, to check.
                              f"; if {', '.join(map(repr, given))} stand for {', '.join(repr(str(c)) for c in classes)}"
                              f" in that order, write them so (pandas: df[{label!r}] = df[{label!r}].astype(str).map("
                              f"{dict(zip(given, map(str, classes)))}))" if len(codes) == len(classes) else ""))
    if alike:
        raise BundleError(f"{path}: {int(strange.sum()):,} of {len(table):,} row(s) hold a label that is no class of "
                          f"the model ({counts}), and {' and '.join(map(repr, alike[0]))} {how_alike(alike[0])}: "
                          "write the labels as the model's classes; scored without those rows, the scores would "
                          "describe the rest alone")
    progress(f"[evaluate] note: {int(strange.sum()):,} of {len(table):,} row(s) hold a label that is not a class of "
             f"the model ({counts}); they are not scored")


def _answers(names: list[str], scores: list[dict], bundles: list) -> list[str]:
    """How each version answers (its cut-off, or the likelier class), what its cut-off flags, and a version that
    answers one class for every row: versions of other cut-offs were ranked by accuracy and macro F1 alone, which
    put a model that never predicts the rare class first."""
    from jobs.decision import cut_text, shortfall, shortfall_chance
    from jobs.pipeline import flagged_lines, one_class_warning

    if bundles[0].task != "classification":
        return []
    decisions = [getattr(b.preprocessor, "decision", None) for b in bundles]
    lines = []
    if any(decisions):
        lines += [f"[evaluate] {n} answers " + (f"{d['positive']!r} when {cut_text(d)}" if d else "by the likelier "
                                                "class") for n, d in zip(names, decisions)]
    for n, s, b, d in zip(names, scores, bundles, decisions):
        cm = s.get("confusion_matrix") or []
        lines += flagged_lines(cm, d, f"[evaluate] {n}")
        if (short := shortfall(cm, d)) is not None:     # `train` says it of its test split; said here of these rows
            what, value, hit, of = short
            chance = shortfall_chance(hit, of, float(d["target"]))
            lines.append(f"[evaluate] note: {n}: the cut-off's {what} of {d['positive']!r} on these rows is "
                         f"{value:.3f} ({hit} of {of}), below the {d['rule']} it was chosen for ("
                         + (f"one that meets it reads this low in {chance:.0%} of samples of {of}" if chance >= 0.01
                            else f"lower than chance explains, p {chance:.1g}") + ")")
        lines += [w.replace("[evaluate] warning: the model", f"[evaluate] warning: {n}").replace(" test row", " row")
                  for w in one_class_warning(cm, b.preprocessor.classes, d)]
    return lines


def _check_columns(table, path: str, label: str, by) -> None:
    import difflib

    from jobs.bundle import BundleError

    columns = [str(c) for c in table.columns]
    for column, what in ((label, "the bundle's label"), (by, "the --by column")):
        if column is not None and column not in table.columns:
            near = difflib.get_close_matches(column.lower(), [c.lower() for c in columns], n=1, cutoff=0.75)
            hint = next((f"Did you mean {c!r}? " for c in columns if near and c.lower() == near[0]), "")
            raise BundleError(f"{path}: no column {column!r} ({what}). {hint}Its columns: "
                              f"{', '.join(map(repr, columns[:30]))}")


def _input_notes(bundle, table) -> list[str]:
    """What `trainyard predict` says of a file, said of the rows a bundle scores: features without a column
    (imputed for every row: a renamed column ranks a version below its worth) and categories it did not see."""
    from jobs.tabular import unseen_categories
    from serving.notes import absent_columns, kept_words

    features = {f["name"]: f for f in bundle.schema["features"]}
    absent = absent_columns(list(features), table.columns, bundle.preprocessor.label)
    notes = [f"the rows have {absent}"] if absent else []
    # Cells left empty, imputed, as `trainyard predict` says them (a feature with no column is said above).
    filled = [n for n, f in features.items() if n in table.columns and f.get("type") in ("number", "category")]
    empty = table[filled].isna().sum().sort_values(ascending=False, kind="stable")
    if (empty > 0).any():
        notes.append(f"{int(table[filled].isna().any(axis=1).sum()):,} of {len(table):,} row(s) leave features "
                     "empty, which it imputes: " + ", ".join(f"{c} in {n:,} row(s)" for c, n in
                                                             empty[empty > 0].head(8).items()))
    # The server's own finding (`unseen_categories`, as /predict reports it), counted by feature.
    known = {n: set(f.get("categories") or []) for n, f in features.items()
             if f.get("type") == "category" and n in table.columns}
    found = unseen_categories(known, table[list(known)].to_dict("records")) if known else []
    for n in known:
        mine = [x for x in found if x["field"] == n]
        if mine:
            kept = kept_words(features[n])
            notes.append(f"{len(mine):,} of {len(table):,} row(s) hold a {n!r} it did not see in training (e.g. "
                         f"{mine[0]['value']!r}), answered as its unknown category" + (
                             f"; not all unseen: {kept}" if kept else ""))
    return notes + _text_notes(bundle, table, [n for n, f in features.items() if f.get("type") == "text"])


def _text_notes(bundle, table, text: list[str]) -> list[str]:
    """Of a text model, as `predict` says them: rows whose text is empty (read as no text at all: an empty note
    scored as a routine one) and rows whose text is cut at max_length tokens (the model read its beginning alone)."""
    notes = []
    present = [c for c in text if c in table.columns]
    if present:
        empty = table[present].apply(lambda cells: cells.map(lambda v: not isinstance(v, str) or not v.strip()))
        if empty.any(axis=None):
            notes.append(f"{int(empty.any(axis=1).sum()):,} of {len(table):,} row(s) leave text empty, which it reads "
                         "as no text: " + ", ".join(f"{c} in {int(n):,} row(s)" for c, n in empty.sum().items() if n))
    if present and hasattr(bundle.preprocessor, "cut") and (cut := bundle.preprocessor.cut(table)):
        notes.append(f"{len(cut):,} of {len(table):,} row(s) hold text longer than data.text.max_length="
                     f"{bundle.preprocessor.max_length} tokens (the longest {max(n for _, n in cut):,}): it read their "
                     f"first {bundle.preprocessor.max_length} alone")
    return notes


def _scored(bundle, table, label: str, path: str, score) -> dict:
    """The bundle's metrics over `table` (the rows whose label is one of its classes), with the count scored."""
    from jobs.bundle import BundleError

    try:
        metrics = score(bundle, [table], label)
    except BundleError as exc:
        raise BundleError(f"{path}: {bundle.version} cannot predict its rows: {exc}") from None
    if bundle.task == "classification":
        metrics["rows"] = int(sum(map(sum, metrics.get("confusion_matrix") or [])))
    else:
        metrics["rows"] = len(table)
    return metrics


def _names(bundles: list, given: list[str]) -> list[str]:
    """Each bundle's column heading: its version; with the job's name first when the bundles come from more than
    one job (`evaluate runs/rul runs/rul_huber` headed two timestamps, which told the runs apart by nothing)."""
    jobs = [str(b.lineage.get("name") or "") for b in bundles]
    versions = [b.version or g for b, g in zip(bundles, given)]
    if len(set(jobs)) > 1:
        return [f"{job}/{version}" if job else version for job, version in zip(jobs, versions)]
    return versions


def _shown(value) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:.4f}"


def _table(names: list[str], scores: list[dict], bundles: list) -> list[str]:
    """Every metric side by side, then each class's recall (classification), each bundle in a column."""
    bundle = bundles[0]
    width = max(16, *(len(n) + 2 for n in names))
    keys = [k for k in scores[0] if k not in ("confusion_matrix", "rows")]
    lines = ["[evaluate] " + " " * 22 + "".join(f"{n:>{width}}" for n in names)]
    macro = bundle.task == "classification"
    lines += [f"[evaluate] {k + (' (macro)' if macro and k in _MACRO else ''):<22}"
              + "".join(f"{_shown(s.get(k)):>{width}}" for s in scores) for k in keys]
    if bundle.task == "classification":
        from jobs.fitted import canonical
        from jobs.metrics import classes_shown, rest_line

        classes = bundle.preprocessor.classes
        recalls = []                    # per class of the first bundle: each bundle's recall, and its rows
        for c in classes:
            cells, held = [], None
            for b, s in zip(bundles, scores):
                # Each bundle's confusion matrix is in its own class order (a retrain may know another class).
                order = [canonical(k) for k in b.preprocessor.classes]
                cm = s.get("confusion_matrix")
                i = order.index(canonical(c)) if canonical(c) in order else None
                rows = sum(cm[i]) if cm and i is not None else 0
                held = rows if held is None else held
                cells.append(cm[i][i] / rows if rows else None)
            recalls.append((cells, held))
        held = [h for _, h in recalls]
        shown, rest = classes_shown(held)
        for i in shown if rest else range(len(classes)):
            name = "recall " + repr(str(classes[i]))
            name = name if len(name) <= 22 else name[:20] + "…'"   # cut, and said so: the quote closes it
            lines.append(f"[evaluate] {name:<22}" + "".join(f"{_shown(r):>{width}}" for r in recalls[i][0])
                         + f"   ({held[i]} rows)")
        if rest:
            lines.append(rest_line([str(c) for c in classes], rest, held,
                                   [r[0][0] if r[0][0] is not None else 0.0 for r in recalls]) + f" ({names[0]})")
    unscored = [f"{n}: {s['rows']}" for n, s in zip(names, scores) if s["rows"] != scores[0]["rows"]]
    if unscored:
        lines.append("[evaluate] note: rows scored differ (a label a version has no class for): " + ", ".join(unscored))
    return lines


def _of_class(scores: dict, bundle, positive) -> dict:
    """The recall and precision of class `positive` from a bundle's confusion matrix (in its own class order);
    None where undefined (no row of it, none predicted)."""
    from jobs.fitted import canonical

    order = [canonical(c) for c in bundle.preprocessor.classes]
    cm = scores.get("confusion_matrix") or []
    i = order.index(canonical(positive)) if canonical(positive) in order else None
    held = sum(cm[i]) if cm and i is not None else 0
    flagged = sum(row[i] for row in cm) if cm and i is not None else 0
    return {"recall": cm[i][i] / held if held else None, "precision": cm[i][i] / flagged if flagged else None,
            "held": held}


def _slices(names, bundles, table, label: str, by: str, path: str, score) -> list[str]:
    """The headline metrics (f1; mae and rmse, in the label's units; for a model answering by a cut-off, the
    recall and precision of its positive class) per value of column `by`, most rows first."""
    # Any version's cut-off names the class (versions of one model share classes): the first's alone gave F1 to
    # both when a version without one was named first.
    decision = next((d for b in bundles if (d := getattr(b.preprocessor, "decision", None))), None)
    keys = ["f1"] if bundles[0].task == "classification" else ["mae", "rmse"]
    keys = ["recall", "precision"] if decision else keys     # a risk team's slice: the defaults caught, macro F1 hid
    key = "/".join(keys) + (f" of {decision['positive']!r}" if decision else "")
    # As objects first: a Parquet column stored dictionary-encoded reads as a pandas Categorical, which cannot take
    # "(missing)" ("Cannot setitem on a Categorical with a new category").
    keyed = table[by].astype(object).fillna("(missing)").astype(str)
    counts = keyed.value_counts()
    heads = [f"{k} {n}" if len(keys) > 1 else n for n in names for k in keys]
    width = max(16, *(len(h) + 2 for h in heads))
    rows = []
    for value, n in counts.head(MOST_SLICES).items():
        part = table[keyed == value]
        scored = [_scored(b, part, label, path, score) for b in bundles]
        scored = [_of_class(s, b, decision["positive"]) for s, b in zip(scored, bundles)] if decision else scored
        # A value cut to fit is marked cut ("2025-05-14 21:" read as an hour of its own)
        shown = value if len(value) <= 19 else value[:18] + "…"
        # A slice's recall of 8 of 11 positives read as 0.7273, its 104 rows beside it: how many it rests on.
        held = f", {scored[0]['held']} {decision['positive']!r}" if decision else ""
        rows.append((f"{shown} ({n}{held})", [s.get(k) for s in scored for k in keys]))
    title = f"by {by}: {key}"
    first = max(26, len(title) - 1, *(len(name) + 1 for name, _ in rows))     # the cells stay under their heads
    lines = [f"[evaluate] {title:<{first + 2}}" + "".join(f"{h:>{width}}" for h in heads)]
    lines += [f"[evaluate]   {name:<{first}}" + "".join(f"{_shown(c):>{width}}" for c in cells) for name, cells in rows]
    if len(counts) > MOST_SLICES:
        lines.append(f"[evaluate]   ... {len(counts) - MOST_SLICES} more value(s) of {by}, "
                     f"{int(counts.iloc[MOST_SLICES:].sum()):,} row(s), not shown")
    if counts.median() < MIN_SLICE_ROWS:
        # A column of a few values (3 machine types) over few rows (57 held out): the rows are what is short.
        fix = ("score more rows (a longer period, or without --held-out)" if len(counts) <= MOST_SLICES else
               "--by suits a column of a few values (a type, a region); for a number, bin it into a column of its "
               "own first")
        lines.append(f"[evaluate] note: {by} has {len(counts):,} distinct values in {len(table):,} rows, most "
                     f"slices under {MIN_SLICE_ROWS} rows, where a score says little: {fix}")
    return lines
