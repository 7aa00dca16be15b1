"""What `trainyard predict` (and `trainyard evaluate`) say of a file of rows beside the predictions: features it
has no column for, numbers far outside the train split's range, categories the model did not see in training, features left empty (imputed)."""
from __future__ import annotations

from typing import Iterable, Optional

from serving.client import _trained_on


def out_of_range_note(notes: list[dict], rows: int, what: str) -> Optional[str]:
    """One line on the rows of `what` holding numbers outside the train split's range (`Client.predict`'s
    "out_of_range"), by feature, most rows first; None when there are none."""
    if not notes:
        return None
    by_field: dict[str, list[dict]] = {}
    for note in notes:
        by_field.setdefault(note["field"], []).append(note)
    flagged = len({note["record"] for note in notes})
    parts = [f"{field} in {len({n['record'] for n in found})} row(s) (e.g. {found[0]['value']:g}; "
             f"{_trained_on(found[0])})" for field, found in sorted(by_field.items(), key=lambda kv: -len(kv[1]))]
    return (f"note: {flagged} of {rows} row(s) of {what} hold numbers well outside the range the model was trained "
            f"on (past it by over a tenth of its width), where it extrapolates and its prediction may be far off "
            f"(the out_of_range column names them): " + ", ".join(parts))


def absent_columns(features: list[str], columns, label: Optional[str]) -> Optional[str]:
    """"no column for 'rpm': the model imputed it for every row, ...; the file's columns it does not take:
    'spindle_rpm'" when a file of rows lacks features (a column renamed since training is among the ones it does
    not take); None when it has them all."""
    absent = [name for name in features if name not in columns]
    if not absent:
        return None
    unused = [str(c) for c in columns if c not in features and c != label and c != "file"]
    return (f"no column for {', '.join(map(repr, absent))}: the model imputed {'it' if len(absent) == 1 else 'them'} "
            "for every row, as it does a missing value"
            + (f"; the file's columns it does not take: {', '.join(map(repr, unused[:8]))}"
               + (", ..." if len(unused) > 8 else "") if unused else ""))


def kept_words(feature: dict) -> str:
    """"" unless the feature's train split held more values than it kept as categories (`kept_of` in /schema):
    then what it kept, for the notes on values outside them (a brand with 9 rows in training was said "not seen in
    training", and sent its user looking for a data bug)."""
    of = feature.get("kept_of")
    return (f"it kept the {len(feature.get('categories') or [])} most frequent of the {of} values it saw in "
            "training (data.preprocess.max_categories), the rest are its unknown category too") if of else ""


def unseen_note(notes: list[dict], rows: int, what: str, features: list[dict]) -> Optional[str]:
    """One line on the rows of `what` holding category values the model did not see in training (`Client.predict`'s
    "unseen_categories"; `features`: /schema's), by feature, most rows first; None when there are none."""
    if not notes:
        return None
    by_field: dict[str, list[dict]] = {}
    for note in notes:
        by_field.setdefault(note["field"], []).append(note)
    known = {f["name"]: f for f in features}
    parts = []
    for field, found in sorted(by_field.items(), key=lambda kv: -len(kv[1])):
        cats = known.get(field, {}).get("categories") or []
        kept = kept_words(known.get(field, {}))
        parts.append(f"{field} in {len({n['record'] for n in found})} row(s) (e.g. {found[0]['value']!r}; it knows "
                     f"{', '.join(map(repr, cats[:8]))}{', ...' if len(cats) > 8 else ''}"
                     f"{'; ' + kept if kept else ''})")
    return (f"note: {len({n['record'] for n in notes})} of {rows} row(s) of {what} hold categories the model did not "
            "see in training, which it answers as its unknown category, as it does a missing value (the "
            "unseen_categories column names them; a spelling of a known one is better mended in the file): "
            + ", ".join(parts))


def imputed_note(notes: list[dict], every: list[str], rows: int, what: str, absent: Iterable[str] = ()) -> Optional[str]:
    """One line on the rows of `what` that leave features empty (`Client.predict`'s "imputed", and
    "imputed_in_every_record": `every`), by feature, most rows first; a feature with no column at all (`absent`)
    is `absent_columns`' to say. None when there is none."""
    absent = set(absent)
    counts = {f: rows for f in every if f not in absent}          # every row left these empty
    records: set = set()
    for note in notes or ():
        if note["field"] not in absent:
            counts[note["field"]] = counts.get(note["field"], 0) + 1
            records.add(note["record"])
    if not counts:
        return None
    parts = sorted(counts.items(), key=lambda kv: -kv[1])
    everywhere = any(f in every for f in counts)
    return (f"note: {rows if everywhere else len(records)} of {rows} row(s) of {what} leave features empty, which the model imputes (the imputed column names "
            "them): " + ", ".join(f"{f} in {n} row(s)" for f, n in parts[:8])
            + (f", and {len(parts) - 8} more feature(s)" if len(parts) > 8 else ""))


def truncated_note(notes: list[dict], rows: int, what: str) -> Optional[str]:
    """One line on the rows of `what` whose text is longer than the model's max_length tokens (`Client.predict`'s
    "truncated"): their answers come from the text's beginning alone. None when there are none."""
    if not notes:
        return None
    longest = max(notes, key=lambda n: n["tokens"])
    return (f"note: {len(notes)} of {rows} row(s) of {what} hold text longer than the {longest['read']} tokens the "
            f"model reads (data.text.max_length; the longest {longest['tokens']:,}): it answered from their "
            "beginning alone, the rest unread (the truncated column names them)")


def unsaid_note(url: str, what: str) -> str:
    """The line for a server that does not say which rows hold numbers outside the training range, unseen
    categories or empty features (`Client.says_row_notes`): a client newer than the server wrote those columns
    empty, which reads as "none found"."""
    return (f"note: the server at {url} (a trainyard from before 2026-12-06) does not say which rows of {what} hold "
            "numbers outside the training range, categories unseen in training or empty features; the out_of_range, "
            "unseen_categories and imputed columns are left out, since empty would read as none found. Serve the "
            "bundle with this trainyard to have them")
