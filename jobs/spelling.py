"""How values are written in exports, said before Ray starts (`jobs.precheck`) and in ingest alike: classes or
categories that are one value written two ways (`look_alike`), and placeholders for a missing value ('?', '-')
taken for a class or a category (`placeholders`), dates written as text (`written_dates`). Imports nothing of trainyard's: ingest, inference and the
checks before Ray all use it."""
from __future__ import annotations

import re
from typing import Optional


# The ways a yes/no answer is written in exports: one column holding several of them is 2 categories written as 4.
YES_NO = {"y": True, "yes": True, "true": True, "t": True, "n": False, "no": False, "false": False, "f": False}


def look_alike(classes: list) -> list[list[str]]:
    """Text classes that are one word written two ways ('Yes', 'Yes ', 'yes'), or one yes/no answer spelt two
    ways ('Y', 'true'): likely one class to the user."""
    groups: dict = {}
    for c in classes:
        if isinstance(c, str):
            key = c.strip().casefold()
            groups.setdefault(YES_NO.get(key, key), []).append(c)
    return [g for g in groups.values() if len(g) > 1]


def how_alike(group: list[str]) -> str:
    return ("differ only in case or in spaces around them" if len({c.strip().casefold() for c in group}) == 1
            else "are one yes/no answer spelt differently")


def same_but_case(group: list[str]) -> bool:
    """A `look_alike` group whose values differ only in case or in spaces around them ('Yes', 'yes', 'Yes '). Not
    one letter in two cases, which can be two classes (a musical key: 'C' major, 'c' minor); spaces never are."""
    folded = {c.strip().casefold() for c in group}
    return len(folded) == 1 and (len(next(iter(folded))) > 1 or len({c.strip() for c in group}) < len(group))


def case_classes_problem(label: str, groups: list[list[str]], where: str) -> str:
    """The refusal of label classes that differ only in case or spaces (`same_but_case` groups): one answer
    written two ways, never two classes meant ('Yes'/'yes'/'No'/'no' in monthly exports trained 4 classes, and a
    model that answered 'no' for every test row, after `validate` said OK)."""
    shown = "; ".join(" and ".join(map(repr, g)) for g in groups)
    return (f"label {label!r}: classes {shown} differ only in case or in spaces around them, and would be trained as "
            f"{'different classes' if len(groups) == 1 else 'different classes each'} ({where}). Write each class "
            "one way in the data, e.g. with pandas: df[label].str.strip() for the spaces, .str.lower() for the case")


def look_alike_note(label: str, group: list[str]) -> str:
    return (f"label {label!r}: classes {' and '.join(map(repr, group))} {how_alike(group)}, and are trained as "
            "different classes; if they are one, make them the same in the data")


# Cells that stand for "no value" in exports but that a CSV reader takes as text: '?', '-', '--', '.', 'n.a.'.
# (Arrow's own null spellings, '', 'NA', 'N/A', 'null', 'NaN' and the like, are read as missing already.)
_PLACEHOLDER = re.compile(r"^\s*([-?._*/]+|n\.\s?a\.)\s*$", re.IGNORECASE)


def placeholders(values) -> list[str]:
    """The values among `values` that read as a placeholder for a missing value ('?', '-'), sorted."""
    return sorted(v for v in values if isinstance(v, str) and _PLACEHOLDER.match(v))


def placeholder_note(name: str, found: list[str], label: bool = False) -> str:
    """A note on a feature column (or the label) holding placeholders (`placeholders`): learnt as a category (or a
    class) of its own, where the user likely meant a missing value."""
    shown = ", ".join(map(repr, found))
    if label:
        return (f"label {name!r} holds {shown} as a class, trained as a class of its own: if it means the outcome "
                "is not known, leave those rows' label empty (they are left out as unlabelled)")
    return (f"column {name!r} holds {shown} among its categories, learnt as a category of its own that a record "
            "sending null (a missing value) never reaches: if it means missing, leave those cells empty "
            "(na_values=[...] when saving the file again)")


def written_dates(column: str, facts: dict) -> Optional[str]:
    """A text column of dates or times ('04.11.2024'), said as a Parquet timestamp is: as categories, every date
    after training is one the model never saw (a bank's fresh rows: 1,500 of 1,500 unseen)."""
    seen = facts.get("first", []) + sorted(facts["not_numbers"]) if facts["capped"] else list(facts["distinct"])
    seen = [v for v in dict.fromkeys(seen) if isinstance(v, str)]
    if len(seen) < 2 or not all(is_date(v) for v in seen):
        return None
    return (f"column {column!r} holds dates or times written as text (values such as {', '.join(map(repr, seen[:3]))}"
            "): as categories, every date after training would be one the model never saw. Derive a number from "
            "it in the data (days before a reference date, a weekday), or list it under data.features.exclude")


def is_date(text: str) -> bool:
    """A date beyond doubt: a 4-digit year first or last, a month and a day in range (not '2.1.0', '555-12-1234')."""
    parts = [int(p) for p in re.split(r"[-/.]", text.strip().split()[0].split("T")[0])] if DATE.match(text) else []
    if len(parts) != 3 or 4 not in (len(str(parts[0])), len(str(parts[2]))):
        return False
    day_month = parts[1:] if len(str(parts[0])) == 4 else parts[:2]
    return all(1 <= p <= 31 for p in day_month) and min(day_month) <= 12


# A text cell that reads as a date or a time: 12/05/2022, 27.09.2026 00:44, 2026-09-27T00:44:00Z.
DATE = re.compile(r"^\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}"
                  r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[-+]\d{2}:?\d{2})?)?\s*$")


def nearest_column(name: str, names: list[str]) -> Optional[str]:
    """The column of `names` nearest `name` (case and a letter or two apart), or None."""
    import difflib

    lowered = {n.lower(): n for n in names}
    near = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[near[0]] if near else None


def case_twins(values: list) -> list[list[str]]:
    """The groups of `values` that differ only in case or spaces (`same_but_case`): one class written two ways."""
    return [g for g in look_alike(values) if same_but_case(g)]
