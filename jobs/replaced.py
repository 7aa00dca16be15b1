"""How a new version compares with the one it replaces as OUTPUT/bundle, said as `[bundle] note:` lines by
`jobs.pipeline.export_bundle`: a worse test score (and when the two were trained on other data or features, so that
their test rows differ), and a version of another job (another name or label) taking the output's pointer."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from jobs import bundle as B


def notes(replaced: Optional[tuple], version: Path, metrics: dict, task: str, versions: Path) -> list[str]:
    """The notes on `version` (just published) against `replaced` (`latest` before it was)."""
    if replaced is None:
        return []
    said = []
    worse = worse_than(replaced, metrics.get("test") or {}, task, metrics.get("decision"))
    if worse:
        said.append(f"{worse}{other_data(replaced[3], trained_on(version))}; to serve that one: "
                    f"trainyard serve {versions / replaced[0]}")
    if other := other_job(versions / replaced[0], version):
        said.append(other)
    return said


def other_job(before: Path, now: Path) -> str:
    """"" unless the version `now` replaces as the latest came from another job or predicts another label: a
    colleague's spec of the same output took the pointer (and `serve OUTPUT` would answer another question)."""
    def job(folder: Path) -> Optional[tuple[str, str]]:
        try:
            return (json.loads((folder / "lineage.json").read_text())["name"],
                    json.loads((folder / "schema.json").read_text())["label"]["name"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    old, new = job(before), job(now)
    if old is None or new is None or old == new:
        return ""
    return (f"the version it replaces as the latest, {before.name}, is of job {old[0]!r} predicting {old[1]!r}, "
            f"this one of job {new[0]!r} predicting {new[1]!r}: {now.parent.parent / B.POINTER} now answers "
            f"{'another question' if old[1] != new[1] else 'for another job'}; to serve that one: trainyard serve "
            f"{before}, and give each job its own output")


# The test metric a new version is compared by with the one it replaces as OUTPUT/bundle, and whether higher is
# better. A pointer that moves to a worse model is said: `serve OUTPUT` would serve it.
_COMPARED = {"classification": ("f1", True), "regression": ("rmse", False)}


def latest(output: Path) -> Optional[tuple[str, dict, Optional[dict], Optional[tuple]]]:
    """(version, test metrics, its binary cut-off or None, what it was trained on: `_trained_on`) of the bundle
    OUTPUT/bundle points to now, or None (none, or unreadable)."""
    try:
        target = (output / B.POINTER).resolve(strict=True)
        test = json.loads((target / "metrics.json").read_text()).get("test") or {}
    except (OSError, ValueError, AttributeError):
        return None
    try:
        decision = json.loads((target / "preprocessor.json").read_text()).get("decision")
    except (OSError, ValueError, AttributeError):
        decision = None
    return target.name, test, decision, trained_on(target)


# What of a split decides which rows are the test rows (lineage.json's data.split; bundles before it lack it).
SPLIT_WAY = ("val", "test", "seed", "by", "order")


def trained_on(folder: Path) -> Optional[tuple[str, list[str], Optional[dict]]]:
    """(data fingerprint, input features, the way the rows were split or None) of the bundle in `folder`, None
    where its files do not say."""
    try:
        data = json.loads((folder / "lineage.json").read_text())["data"]
        features = [f["name"] for f in json.loads((folder / "schema.json").read_text())["features"]]
        split = data.get("split")
        way = {k: split.get(k) for k in SPLIT_WAY} if split else None
        if way and way["order"]:
            way["seed"] = None          # unused by a split by time: the same test rows whatever it was
        return data["fingerprint"], features, way
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _split_way(way: dict) -> str:
    how = (f"by {way['by']!r}, seed {way['seed']}" if way["by"] else f"by time {way['order']!r}" if way["order"] else
           f"by row, seed {way['seed']}")
    return f"{how}, val {way['val']:g}, test {way['test']:g}"


def other_data(before: Optional[tuple], now: Optional[tuple]) -> str:
    """What differs between the data two versions were trained and tested on, for the note that compares their
    test scores: each scored its own test split, so a change of data, features or split makes those different
    rows (a split by patient scores lower than one by row, on the same files, and rightly)."""
    if before is None or now is None or before == now:
        return ""
    said = []
    if before[0] != now[0]:
        said.append(f"other data files, or the same rewritten (fingerprint {str(before[0])[:12]} → "
                    f"{str(now[0])[:12]})")
    gone, added = [f for f in before[1] if f not in now[1]], [f for f in now[1] if f not in before[1]]
    if gone or added:
        said.append("other features (" + ", ".join([f"-{f}" for f in gone] + [f"+{f}" for f in added]) + ")")
    if before[2] and now[2] and before[2] != now[2]:
        said.append(f"another split ({_split_way(before[2])} → {_split_way(now[2])})")
    return (f" ({' and '.join(said)}, so different test rows: trainyard evaluate OLD NEW --data ROWS scores both "
            "on the same rows)") if said else ""


def _answers_by(decision: Optional[dict]) -> str:
    return (f"the cut-off {decision['rule']} for {decision['positive']!r}" if decision else "the likelier class")


def worse_than(replaced: Optional[tuple], test: dict, task: str, decision: Optional[dict] = None,
               replaces: str = "as the latest") -> str:
    """"version X ... scored test f1 0.75, this one 0.52" when the new version scores worse on its test split
    than the version it replaces did on its own; "" otherwise. Versions that answer by different cut-offs
    (`decision`: a credit team's min_recall against an earlier threshold) are not ranked by F1, which a cut-off
    trades for recall on purpose: the note names both instead; versions of one binary rule are ranked by AUC."""
    key, higher = _COMPARED[task]
    if replaced is None:
        return ""
    before = replaced[2]
    if task == "classification" and ({k: (before or {}).get(k) for k in ("positive", "rule")}
                                     != {k: (decision or {}).get(k) for k in ("positive", "rule")}):
        return (f"the version it replaces {replaces}, {replaced[0]}, answered by {_answers_by(before)}, this "
                f"one by {_answers_by(decision)}, so their test {key} is not compared")
    if (task == "classification" and decision and str(decision.get("rule", "")).startswith(("min_recall",
                                                                                             "min_precision"))
            and isinstance(test.get("auc"), (int, float)) and isinstance(replaced[1].get("auc"), (int, float))):
        # Under one target rule (min_recall), F1 ranked a model of lower AUC and recall first: the ranking the
        # rule cuts is what a retrain improves, so two such versions are compared by their AUC (best_f1 and a
        # fixed threshold keep F1, what the one optimises and the other compares like with like).
        key, higher = "auc", True
    if key not in test or not isinstance(replaced[1].get(key), (int, float)):
        return ""
    old, new = replaced[1][key], test[key]
    if (new >= old) if higher else (new <= old):
        return ""
    return (f"the version it replaces {replaces}, {replaced[0]}, scored test {key} {old:.4f} on its test split, "
            f"this one {new:.4f}")
