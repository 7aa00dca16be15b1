"""What a spec leaves open, inferred from the data: the task from the label, and each column's role
(numeric, categorical or, for a text model, free text), from facts gathered in one Ray Data pass (`probe`,
per block; `merge_probes`, on the driver). `jobs.ingest` runs it and reports what was inferred, and why."""
from __future__ import annotations

import json
import re
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cluster.errors import BadInput
from jobs.spelling import DATE, YES_NO, how_alike, look_alike, placeholder_note, placeholders, written_dates
from jobs.spec import DataSpec

# Labels with at most this many distinct integral values are taken as classes when data.task is omitted.
MAX_INFERRED_CLASSES = 20


class DataError(BadInput):
    """The data cannot be used as given; the message names the file or column and the fix. `columns`: the
    columns it refuses, where it is about columns (`infer_features`), for a caller that goes on without them."""

    def __init__(self, *args, columns: tuple = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.columns = tuple(columns)


def kind_of(t: pa.DataType) -> str:
    """What trainyard makes of an Arrow type: null, bool, int, float, string, time or other."""
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "time"
    return "other"


def probe(batch: pa.Table, columns: list[str], cap: int) -> dict:
    """Per-block facts for inference: distinct values (capped), integrality, null counts."""
    out = {}
    for c in columns:
        col = batch[c]
        valid = pc.drop_null(col)
        uniq = pc.unique(valid)
        info = {"nulls": col.null_count, "n": len(col), "all_distinct": len(uniq) == len(valid)}
        if pa.types.is_integer(col.type) and len(valid):
            info.update(pc.min_max(valid).as_py())          # {"min": ..., "max": ...}
        if len(uniq) <= cap and kind_of(col.type) != "time":    # a split's times: no values needed (nor JSON)
            info["distinct"] = [jsonable(v) for v in uniq.to_pylist()]
        if pa.types.is_floating(col.type) and len(valid):
            info["integral"] = bool(pc.all(pc.equal(pc.floor(valid), valid)).as_py())
            info["infinite"] = int(pc.sum(pc.cast(pc.is_inf(valid), pa.int64())).as_py() or 0)
        if pa.types.is_string(col.type) and len(valid):
            info["chars"] = int(pc.sum(pc.utf8_length(valid)).as_py())
            info["first"] = valid.slice(0, 2).to_pylist()
            cells = pc.utf8_trim_whitespace(valid)
            cells = pc.filter(cells, pc.not_equal(cells, ""))
            numbers = pc.match_substring_regex(cells, _NUMBER)
            info["filled"], info["numbers"] = len(cells), int(pc.sum(pc.cast(numbers, pa.int64())).as_py() or 0)
            commas = pc.match_substring_regex(cells, _COMMA_NUMBER)
            info["comma_numbers"] = int(pc.sum(pc.cast(commas, pa.int64())).as_py() or 0)
            dressed = pc.match_substring_regex(cells, _DRESSED_NUMBER)
            info["dressed_numbers"] = int(pc.sum(pc.cast(dressed, pa.int64())).as_py() or 0)
            info["dressed"] = pc.unique(pc.filter(cells, dressed)).slice(0, 3).to_pylist()   # the examples said
            info["not_numbers"] = pc.unique(pc.filter(cells, pc.invert(numbers))).slice(0, 3).to_pylist()
        out[c] = info
    return {"probe": np.array([json.dumps(out)], dtype=object)}


# A cell that reads as a number (as a CSV reader would parse it), once trimmed.
NUMBER = _NUMBER = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"
# A number written with a comma: a decimal comma (25,0, a European spreadsheet's) or thousands (1,200,000.50); or
# with a space (or a no-break space, or an apostrophe) between groups of digits: 10 081, 1'200,50.
_COMMA_NUMBER = r"^[-+]?(\d+(,\d+)+(\.\d+)?|\d{1,3}([ " + "\u00a0\u202f" + r"']\d{3})+([.,]\d+)?)$"
# A number with a currency sign before or after it, or a percent sign after it ($1,234.50, -€5, 12 %, 3.20 €): an
# amount or a rate exported as shown on screen.
_PLAIN = r"(\d+(,\d+)*(\.\d*)?|\.\d+)"
_DRESSED_NUMBER = (rf"^[-+]?\s*([$€£¥₹]\s*[-+]?\s*{_PLAIN}|{_PLAIN}\s*(%|[$€£¥₹]))$"
                   # an accountant's negative: (1,234.50), ($80)
                   rf"|^\(\s*[$€£¥₹]?\s*{_PLAIN}\s*\)$")
# A string column whose filled cells are at least this share numbers is a numeric column with a few stray
# values ('?', 'n/a', '1,5'): taken for categories, each number would be a category of its own.
MOSTLY_NUMBERS = 0.9


def jsonable(v):
    return v.item() if hasattr(v, "item") else v


def merge_probes(rows: list[str], columns: list[str]) -> dict:
    merged = {c: {"nulls": 0, "n": 0, "distinct": set(), "capped": False, "integral": True, "chars": 0, "infinite": 0,
                  "filled": 0, "numbers": 0, "comma_numbers": 0, "dressed_numbers": 0, "not_numbers": set(),
                  "dressed": set(),
                  "all_distinct": True,
                  "min": None, "max": None}
              for c in columns}
    for row in rows:
        for c, info in json.loads(row).items():
            m = merged[c]
            m["nulls"] += info["nulls"]
            m["n"] += info["n"]
            if "distinct" in info:
                m["distinct"].update(info["distinct"])
            else:
                m["capped"] = True
            m["integral"] = m["integral"] and info.get("integral", True)
            m["chars"] += info.get("chars", 0)
            m["infinite"] += info.get("infinite", 0)
            m["filled"] += info.get("filled", 0)
            m["numbers"] += info.get("numbers", 0)
            m["comma_numbers"] += info.get("comma_numbers", 0)
            m["dressed_numbers"] += info.get("dressed_numbers", 0)
            m["not_numbers"].update(info.get("not_numbers", []))
            m["dressed"].update(info.get("dressed", []))
            # Distinct within every block: a column whose blocks repeat each other's values passes as distinct.
            m["all_distinct"] = m["all_distinct"] and info.get("all_distinct", False)
            m["first"] = m.get("first") or info.get("first", [])
            if "min" in info:
                m["min"] = info["min"] if m["min"] is None else min(m["min"], info["min"])
                m["max"] = info["max"] if m["max"] is None else max(m["max"], info["max"])
    return merged


def infer_task(label_type: pa.DataType, facts: dict, inferred: dict, label: str) -> str:
    kind = kind_of(label_type)
    distinct = None if facts["capped"] else len(facts["distinct"])
    if kind in ("string", "bool"):
        task, why = "classification", f"{kind} label"
    elif kind in ("int", "float") and facts["integral"] and distinct is not None and distinct <= MAX_INFERRED_CLASSES:
        task, why = "classification", f"{distinct} distinct integral values"
        if distinct > 2:        # days or counts in whole units are classes here unless told: said where it is read
            why += ", a class each; set data.task: regression if it is a quantity (days, a count)"
    elif kind in ("int", "float"):
        task, why = "regression", "numeric label with many distinct values"
    else:
        raise DataError(f"label {label!r} has type {label_type}; it can be neither classified nor regressed")
    inferred["task"] = f"{task} ({why})" + ("" if "data.task" in why else "; set data.task to override")
    return task


# A cell holding a number and then text: a unit ('3.9 days', '12 mg'), a note ('5 (est.)').
_NUMBER_WITH_TEXT = r"^\s*[-+]?(\d+\.?\d*|\.\d+)\s*[^\d\s.,].*$"


def text_label_problem(label: str, t: pa.DataType, values: list, numbers: Optional[bool] = None) -> str:
    """Why a label of `t` (not numbers) cannot be a regression target, with the fix its `values` suggest;
    `numbers`: whether some of its cells are numbers (else: whether some of `values` are)."""
    values = [str(v).strip() for v in values]
    text = [v for v in values if not re.match(_NUMBER, v)][:3]
    numbers = len(text) < len(values) if numbers is None else numbers
    shown = ", ".join(map(repr, text))
    if any(re.match(_NUMBER_WITH_TEXT, v) for v in text):
        return (f"label {label!r} holds numbers written with text (values such as {shown}), so it reads as {t}, "
                "and data.task regression needs numbers: write the numbers alone in that column (e.g. with pandas: "
                f"df[{label!r}] = df[{label!r}].str.extract(r'([-+]?[0-9.]+)', expand=False).astype(float))")
    if text and numbers:
        return (f"label {label!r} holds numbers but also text (values such as {shown}), so it reads as {t}, and "
                "data.task regression needs numbers: fix those cells, or empty them (a row without a label is "
                "dropped)")
    such = f" (values such as {shown})" if text else ""
    return (f"label {label!r} is {t}{such}, which cannot be regressed: if its values are classes, set data.task: "
            "classification (or leave data.task out); else point data.label at a column of numbers")


def not_text_problem(column: str, t: pa.DataType) -> str:
    """A column data.features.text lists that holds `t`, not strings (checked before Ray, and at ingest)."""
    return (f"data.features.text lists {column!r}, but it holds {t}, not text; list it under "
            "data.features.numeric or categorical instead")


def infer_features(schema: pa.Schema, columns: list[str], data: DataSpec, facts: dict, inferred: dict, *,
                   text: bool = False) -> tuple[list[str], list[str], list[str]]:
    """(numeric, categorical, text) columns: as data.features lists them, the rest inferred (and said in
    `inferred`). Text columns only for a job that reads text (`text`: model.kind text)."""
    given_num, given_cat, given_text = data.features.numeric, data.features.categorical, data.features.text
    numeric, categorical, texts = [], [], []
    ids = id_candidates(schema, columns, data, facts, text=text)
    if ids:
        raise DataError("\n".join(_id_problem(c, schema.field(c).type, facts[c], data.preprocess.max_categories)
                                   for c in ids), columns=ids)
    for c in columns:
        kind = kind_of(schema.field(c).type)
        if given_text is not None and c in given_text:
            if kind != "string":
                raise DataError(not_text_problem(c, schema.field(c).type), columns=[c])
            texts.append(c)
        elif text and given_text is None and kind == "string" and _looks_like_text(facts[c]):
            texts.append(c)
            inferred[c] = f"text ({_describe_text(facts[c])}); list data.features.text to override"
        elif given_num is not None and c in given_num:
            if kind == "string":
                if problem := number_problem(c, facts[c]) or stored_as_text(c, facts[c]):
                    raise DataError(problem, columns=[c])
                raise DataError(f"data.features.numeric lists {c!r}, but it holds text (values such as "
                                f"{_some(facts[c])}); move it to categorical", columns=[c])
            numeric.append(c)
        elif given_cat is not None and c in given_cat:
            categorical.append(c)
        elif given_num is not None and given_cat is not None:
            continue  # both lists given: the column is reported as unused
        elif kind == "string" and (problem := number_problem(c, facts[c]) or written_dates(c, facts[c])):
            raise DataError(problem + "; or, to keep its values as categories, list it under "
                            "data.features.categorical", columns=[c])
        elif kind in ("string", "bool"):
            categorical.append(c)
            inferred[c] = f"categorical ({kind})"
        elif (kind == "int" and not facts[c]["capped"]
              and len(facts[c]["distinct"]) <= data.preprocess.categorical_max_ints):
            categorical.append(c)
            inferred[c] = _integer_categories(facts[c]["distinct"])
        else:
            numeric.append(c)
            inferred[c] = "numeric"
    if text and not texts:
        raise DataError("model.kind text needs a text column, and none was found (strings of "
                        f"{TEXT_MIN_CHARS}+ characters on average, mostly distinct); list it under data.features.text")
    if not numeric and not categorical and not texts:
        raise DataError("no feature columns are left after data.features.exclude; keep at least one")
    return numeric, categorical, texts


# A column of strings, or of consecutive whole numbers, with a different value in each of at least this many rows
# is an identifier (a patient's or order's ID, a row number a spreadsheet or pandas' index wrote), not a feature.
ID_MIN_ROWS = 50


def _inferred_role(column: str, data: DataSpec, text: bool) -> bool:
    """Whether the column's role is left to inference (not listed under data.features), as a feature."""
    f = data.features
    listed = [names for names in (f.numeric, f.categorical, f.text) if names is not None]
    return not any(column in names for names in listed) and (f.numeric is None or f.categorical is None)


# A column named as an identifier: customer_id, order-ID, Id, customerId, uuid. Whole numbers named so, each
# once, are an ID even when they are not consecutive (a warehouse's customer numbers).
_ID_NAME = re.compile(r"(?i:(^|[_\s.-])(id|uuid|guid))$|[a-z](Id|ID)$")     # not 'paid', 'valid', 'covid


def id_candidates(schema: pa.Schema, columns: list[str], data: DataSpec, facts: dict, *,
                  text: bool = False) -> list[str]:
    """The columns `infer_features` refuses as identifiers, by the probes' facts. The probes see a block each:
    values that differ within every block may repeat across blocks, which `confirm_distinct` checks against the
    whole column before these are refused."""
    return [c for c in columns if _inferred_role(c, data, text) and _looks_like_id(c, schema.field(c).type, facts[c])]


def confirm_distinct(facts: dict, columns: list[str], chunks: list[pa.ChunkedArray | pa.Array]) -> None:
    """Set `facts[column]["all_distinct"]` from the whole column (`chunks`, for each of `columns`, its values in
    every block): a date written as text repeated across blocks was refused as "a different value in each row"."""
    for column, values in zip(columns, chunks):
        present = facts[column]["n"] - facts[column]["nulls"]
        facts[column]["all_distinct"] = pc.count_distinct(values).as_py() == present


def _looks_like_id(column: str, t: pa.DataType, facts: dict) -> bool:
    present = facts["n"] - facts["nulls"]
    if present < ID_MIN_ROWS or not facts["all_distinct"]:
        return False
    if kind_of(t) == "string" and (_looks_like_text(facts) or number_problem("", facts)):
        return False            # notes, or numbers with stray cells: said as such
    return kind_of(t) == "string" or (kind_of(t) == "int" and (facts["max"] - facts["min"] + 1 == present
                                                                or bool(_ID_NAME.search(column))))


def infinite_problem(facts: dict, names: list[str], where: str) -> Optional[str]:
    """The columns holding inf or -inf (`probe`'s count), said with the fix; None when none does."""
    infinite = {c: facts[c]["infinite"] for c in names if facts[c]["infinite"]}
    if not infinite:
        return None
    said = "; ".join(f"column {c!r} holds {n} infinite value(s) (inf or -inf)" for c, n in infinite.items())
    return (f"{said} in {where}: a model cannot learn from them. Replace them with numbers, or empty those cells "
            "(a missing feature is imputed, a row without a label is dropped), or list a feature column under "
            "data.features.exclude")


def _integer_categories(distinct: set) -> str:
    """How an integer column of a few values was taken, and the other way: a count (late payments, visits)
    keeps its order as a number, and a value past those seen is then a number, not the unknown category."""
    values = sorted(distinct)
    if not values:                  # no value in any row: imputed alike whatever it is taken as
        return "categorical (no value in any row)"
    return (f"categorical ({len(values)} distinct integers, {values[0]} to {values[-1]}; if it is a count or a "
            f"scale, list it under data.features.numeric: as a category, a value not seen in training, such as "
            f"{values[-1] + 1}, is the unknown category)")


def _id_problem(column: str, t: pa.DataType, facts: dict, max_categories: int) -> str:
    present = facts["n"] - facts["nulls"]
    if kind_of(t) == "int" and facts["max"] - facts["min"] + 1 == present:
        what = f"the whole numbers {facts['min']} to {facts['max']}, each once: a row number or an ID"
        keep, kept = "numeric", ""
    elif kind_of(t) == "int":
        what = (f"a different whole number in each of its {present} rows ({facts['min']} to {facts['max']}), and "
                "its name says an ID")
        keep, kept = "numeric", ""
    else:
        some = ", ".join(repr(v) for v in facts.get("first", [])[:2])
        what = f"a different value in each of its {present} rows ({some}, ...): an ID"
        kept = f", and {min(max_categories, present)} of its values would be kept in the bundle as categories"
        keep = "categorical"
    name = f"{column!r} (no name in the header: the index pandas writes unless to_csv(..., index=False))" \
        if column == "" else repr(column)
    return (f"column {name} holds {what}, not a feature a model can learn from{kept}. List it under "
            f"data.features.exclude (or under data.features.{keep} to use it anyway)")


# A string column is taken for free text (model.kind text, data.features.text omitted) when its values average at
# least this many characters and at least this share of them are distinct: descriptions, notes, reviews; not
# codes, names of machine types or yes/no answers.
TEXT_MIN_CHARS = 20
TEXT_MIN_DISTINCT = 0.5


def _looks_like_text(facts: dict) -> bool:
    present = facts["n"] - facts["nulls"]
    if not present or facts["chars"] / present < TEXT_MIN_CHARS:
        return False
    return facts["capped"] or len(facts["distinct"]) >= TEXT_MIN_DISTINCT * present


def _describe_text(facts: dict) -> str:
    present = facts["n"] - facts["nulls"]
    distinct = "over 100 distinct values" if facts["capped"] else f"{len(facts['distinct']) / present:.0%} distinct"
    return f"{facts['chars'] / present:.0f} characters on average, {distinct}"


def _mostly_numbers(facts: dict) -> bool:
    return facts["filled"] > 0 and facts["numbers"] < facts["filled"] and \
        facts["numbers"] >= MOSTLY_NUMBERS * facts["filled"]


def _comma_numbers(facts: dict) -> bool:
    """Numbers written with a comma, in more cells than a few strays and with the plain numbers in (nearly) every
    filled cell: read as text, they would be categories. (One '12,5' among numbers is a stray cell.)"""
    return facts["comma_numbers"] > (1 - MOSTLY_NUMBERS) * facts["filled"] and \
        facts["numbers"] + facts["comma_numbers"] >= MOSTLY_NUMBERS * facts["filled"]


def _dressed_numbers(facts: dict) -> bool:
    """Amounts or rates with a currency or percent sign ('$1,234.50', '12%') in more cells than a few strays, and
    numbers in (nearly) every filled cell: read as text, each amount would be a category of its own."""
    dressed = facts.get("dressed_numbers", 0)
    return dressed > (1 - MOSTLY_NUMBERS) * facts["filled"] and \
        facts["numbers"] + facts["comma_numbers"] + dressed >= MOSTLY_NUMBERS * facts["filled"]


def _dressed_values(column: str, facts: dict) -> str:
    signed = rf"df[{column!r}].str.replace(r'^\((.*)\)$', r'-\1', regex=True)"   # rf: r'-\1' was '-\x01' in an f-string
    comma = next((v for v in sorted(facts["not_numbers"]) if re.search(r",\d{1,2}(?!\d)", str(v))), None)
    point = (f"pd.to_numeric({signed}.str.replace(r'[^0-9.eE+-]', '', regex=True)) for a decimal point ((1,234.50) "
             "becomes -1234.5, 12% becomes 12)")
    # A decimal comma's '.' separates thousands: '€ 2.500' is 2500, which the point's way read as 2.5.
    decimal = (f"pd.to_numeric({signed}.str.replace(r'[^0-9,eE+-]', '', regex=True).str.replace(',', '.')) for a "
               "decimal comma ('€ 2.500' becomes 2500, '1.234,50' 1234.5)")
    return (f"column {column!r} holds numbers written with a currency or percent sign or in parentheses "
            f"({facts['dressed_numbers']} of its {facts['filled']} filled cell(s), such as "
            f"{', '.join(map(repr, sorted(facts.get('dressed') or ())[:3])) or _some(facts)}), which trainyard "
            f"reads as text. Save the numbers alone, e.g. with pandas: df[{column!r}] = " + (f"{decimal}, as cells such as {comma!r} suggest; or {point}" if comma else
                                           f"{point}; or {decimal}")
            + ", then save the table as a new file and point data.path at it")


def number_problem(column: str, facts: dict) -> Optional[str]:
    """Why a text column is numbers written as text, or None: with a comma, with a currency or percent sign, with
    a few stray cells, or plain numbers in every cell of more distinct values than categories could keep."""
    if problem := written_numbers_problem(column, facts):
        return problem
    if _mostly_numbers(facts):
        return _stray_values(column, facts)
    # A warehouse's decimal exported as text ('133.89'): 50 of its prices were kept as categories, nothing said.
    return stored_as_text(column, facts) if facts["capped"] else None


def stored_as_text(column: str, facts: dict) -> Optional[str]:
    """Plain numbers in every filled cell of a text column (a Parquet string column), said with the fix; None
    otherwise."""
    if not facts["filled"] or facts["numbers"] != facts["filled"]:
        return None
    many = ", more distinct values than categories could keep" if facts["capped"] else ""
    return (f"column {column!r} holds numbers stored as text in every filled cell (values such as {_some(facts)}"
            f"{many}): store them as numbers (pandas: df[{column!r}] = pd.to_numeric(df[{column!r}]); SQL: "
            f"CAST({column} AS DOUBLE))")


def written_numbers_problem(column: str, facts: dict) -> Optional[str]:
    """Numbers written with a comma, or with a currency or percent sign, said with the fix; None otherwise."""
    if _comma_numbers(facts):
        return _comma_values(column, facts)
    return _dressed_values(column, facts) if _dressed_numbers(facts) else None


def _comma_values(column: str, facts: dict) -> str:
    return (f"column {column!r} holds numbers written with a comma or a space between digits "
            f"({facts['comma_numbers']} of its {facts['filled']} filled cell(s), such as {_some(facts)}), which "
            "trainyard reads as text: numbers need '.' as the decimal point and no thousands separator. Save the "
            "file as a new one, e.g. with pandas: pd.read_csv(path, decimal=',') for a decimal comma (add sep=';' if "
            "';' separates the fields), or thousands=',' (or ' ') for a thousands separator, then "
            ".to_csv('clean.csv', index=False), and point data.path at it; add na_values=['?', '-'] if such cells "
            "stand for a missing value (they keep the column text)")


def _some(facts: dict) -> str:
    values = sorted(facts["not_numbers"])[:3] or sorted(map(str, facts["distinct"]))[:3] or facts.get("first", [])
    return ", ".join(repr(v) for v in values)


def _stray_values(column: str, facts: dict) -> str:
    others = facts["filled"] - facts["numbers"]
    # A lab's '<0.2' or '>250' (beyond what it measures), emptied as told, was imputed with the median: 20x off.
    limits = [v for v in facts["not_numbers"] if isinstance(v, str) and _LIMIT.match(v)]
    limit = (f"; a value beyond a measuring limit ({', '.join(map(repr, sorted(limits)[:2]))}) is better written as "
             "the limit itself (0.2 for '<0.2') than left empty, which imputes it (data.preprocess.impute: the median by "
             "default)") if limits else ""
    return (f"column {column!r} holds numbers but for {others} of its {facts['filled']} filled cell(s) (values such as "
            f"{_some(facts)}), so it reads as text. Fix those cells, or leave them empty for a missing value{limit}")


_LIMIT = re.compile(r"^\s*(<=?|>=?|≤|≥)\s*[-+]?(\d+\.?\d*|\.\d+)\s*$")


def feature_notes(numeric: list[str], categorical: list[str], facts: dict,
                  max_categories: Optional[int] = None, by_time: bool = False) -> list[str]:
    """Notes on feature columns the model may learn less from than the user thinks: one value in every row
    (nothing to learn), a yes/no written several ways ('Y', 'N', 'true', 'False': 4 categories), one category
    written two ways ('North', ' North'), a category of more values than `max_categories` keeps (dates written
    as text among them)."""
    notes = []
    for c in categorical:
        distinct = None if facts[c]["capped"] else len(facts[c]["distinct"])
        if max_categories is not None and (distinct is None or distinct > max_categories):
            first = facts[c].get("first") or []
            dates = (f"; its values look like dates or times ({', '.join(map(repr, first))}), which trainyard "
                     "does not read: derive a number from them in the data (days before a reference date, a "
                     "weekday), or list it under data.features.exclude") if first and all(
                         isinstance(v, str) and DATE.match(v) for v in first) else ""
            count = f"more than {MAX_INFERRED_CLASSES * 5}" if distinct is None else str(distinct)
            # Named as an identifier (customer_id) and repeated (a customer's several loans): not refused as an
            # ID (that takes a value per row), and learnt as the most frequent customers, a leak from train to test.
            # Split by time (data.split.order), `by` is refused beside it: the later rows of the same ones are the
            # test split there, and excluding the column is the fix left.
            split = ("" if by_time else f", or split by it (data.split.by: {c}) to measure the model on ones it "
                     "never saw")
            ident = (f"; named as an identifier, it teaches the model who the {max_categories} most frequent "
                     f"{c!r} are, which a test split of the same ones flatters: list it under "
                     f"data.features.exclude{split}") if _ID_NAME.search(c) else ""
            notes.append(f"column {c!r} has {count} distinct values: as a category, the {max_categories} most "
                         "frequent are kept (data.preprocess.max_categories) and the rest are one unknown category"
                         + dates + ident)
    for c in numeric + categorical:
        values = facts[c]["distinct"]
        if facts[c]["capped"] or facts[c]["n"] == facts[c]["nulls"]:
            continue
        if c in categorical and (found := placeholders(values)):
            notes.append(placeholder_note(c, found))
        if len(values) == 1 and (c in numeric or not facts[c]["nulls"]):   # a category: 'yes' or missing is 2
            notes.append(f"column {c!r} holds one value, {next(iter(values))!r}, in every row that has one: a model "
                         "learns nothing from it (data.features.exclude leaves it out)")
        elif c in categorical and all(isinstance(v, str) for v in values):
            spelled = sorted(v for v in values if v.strip().lower() in YES_NO)
            if len(spelled) == len(values) and len(values) > 2:
                notes.append(f"column {c!r} holds yes/no written {len(values)} ways ({', '.join(map(repr, spelled))}):"
                             f" {len(values)} categories where there may be 2; write them one way in the data")
            else:
                notes += [f"column {c!r}: categories {' and '.join(map(repr, g))} {how_alike(g)}, and are learnt "
                          "as different categories; if they are one, make them the same in the data"
                          for g in look_alike(sorted(values))]
    return notes


def number_classes_note(label: str, classes: list, rows: Optional[int] = None) -> Optional[str]:
    """A label of more than MAX_INFERRED_CLASSES distinct numbers classified (data.task: classification): each
    value a class of its own, a few rows each. 3,000 days-to-failure made 347 classes, a split of 78/11/11 for the
    asked 70/15/15 (each class's few rows split unevenly), a test F1 of 0.002 and 240 warning lines, with nothing
    said of why. None for fewer classes or classes that are not all numbers."""
    if len(classes) <= MAX_INFERRED_CLASSES or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        return None
    each = f" ({rows / len(classes):.1f} rows a class on average)" if rows else ""
    return (f"label {label!r} holds {'at least ' if rows is None else ''}{len(classes):,} distinct numbers, each a "
            f"class of its own{each}: if it is a quantity (days, a price, a count), set data.task: regression")


def label_missing(column):
    """Where an Arrow label column is missing, as ingest reads it: null, NaN, text blank after a trim (a CSV's "")."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    missing = pc.is_null(column, nan_is_null=True)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        missing = pc.or_(missing, pc.equal(pc.utf8_trim_whitespace(column), "")).fill_null(True)
    return missing
