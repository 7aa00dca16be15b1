"""How to save a CSV that trainyard cannot read as it is: one not in UTF-8, or one with ';' (a tab, '|') between its
fields. `train`, `validate` and `predict` (serving.tables) give the same advice."""
from __future__ import annotations

import csv
import io
from typing import Optional

import pyarrow.fs as pafs


def not_utf8(fs: pafs.FileSystem, path: str, where: str) -> str:
    """A CSV not in UTF-8: where (the first line of its first 4 MB not decoding, and the column of a data line), the
    character as its likely encoding reads it, and the fix. A data line's other cells are not shown: they may hold
    what must not reach a CI log (a patient's name beside the accented town that broke the decoding)."""
    at, encoding = "", "latin-1"
    try:
        with fs.open_input_stream(path) as stream:
            head = stream.read(HEAD_BYTES)
        if len(head) == HEAD_BYTES:     # cut at a line's end: a character cut in two is no encoding error
            head = head[:head.rfind(b"\n") + 1] or head
        offset = 0
        for number, raw in enumerate(head.splitlines(keepends=True), 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                encoding = _likely_encoding(raw)
                char = raw[exc.start:exc.start + 1].decode(encoding)
                if number == 1:         # the header: its names are no one's data
                    at = f" (line 1: {raw.decode(encoding).rstrip()[:60]!r} as {encoding})"
                else:
                    column = _column_at(head, offset + exc.start, where)
                    at = f" (line {number}{column}: byte 0x{raw[exc.start]:02x}, {char!r} as {encoding})"
                break
            offset += len(raw)
    except Exception:       # unreadable now: the message stands without the line
        at = ""
    return (f"{path}: {where} holds text that is not UTF-8{at}; trainyard reads CSV files as UTF-8. Save the file "
            f"as UTF-8, e.g. iconv -f {encoding} -t utf-8 {path} > fixed.csv, or in Python "
            f"pandas.read_csv({path!r}, encoding={encoding!r}).to_csv('fixed.csv', index=False)")


HEAD_BYTES = 4 << 20


def _column_at(head: bytes, at: int, where: str) -> str:
    """", column 'town'" for the byte at offset `at` of a CSV's `head`, read as records (a quoted cell may span
    lines); "" where `where` names that column already or it cannot be told. Every byte before it is UTF-8 (the
    first that is not is at `at`): the header's names read as such, a byte-order mark dropped."""
    try:
        # A sentinel where the byte is: the last record's last field is the one it is in, inside quotes or not.
        records = list(csv.reader(io.StringIO(head[:at].decode("utf-8-sig", "replace") + "\x00", newline="")))
        names = records[0] if len(records) > 1 else []
        field = len(records[-1]) - 1
    except csv.Error:       # a field past csv's size limit
        return ""
    if not 0 <= field < len(names) or repr(names[field]) in where:
        return ""
    return f", column {names[field]!r}"


def _likely_encoding(raw: bytes) -> str:
    try:
        raw.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def other_separator(fs: pafs.FileSystem, path: str) -> Optional[str]:
    """';', tab or '|' when the header line has one between its names and no ',' (a European spreadsheet's CSV)."""
    try:
        with fs.open_input_stream(path) as stream:
            header = stream.read(65536).decode("utf-8", "replace").splitlines()[0]
    except Exception:       # unreadable, or no line: the caller's own message stands
        return None
    return next((ch for ch in (";", "\t", "|") if ch in header and "," not in header), None)


def resave_hint(sep: str, then: str = "point data.path at it") -> str:
    """How to save a CSV separated by `sep` with commas, as a new file: the advice overwrote the export itself. A
    ';' file is usually written with decimal commas; cells such as '?' or '-' keep a column text whatever else."""
    decimal = ", decimal=','" if sep == ";" else ""
    return (f"Save it with commas as a new file, keeping the export as it came, e.g. with pandas: pd.read_csv(path, "
            f"sep={sep!r}{decimal}).to_csv('clean.csv', index=False), and {then}"
            + ("; decimal=',' reads numbers written with a decimal comma, 25,0, as numbers (leave it out if the "
               "file's numbers use a point)" if decimal else "")
            + "; add na_values=['?', '-'] if such cells stand for a missing value")
