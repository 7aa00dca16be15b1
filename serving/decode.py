"""A request body to Python values: strict UTF-8, each key once in an object, integers of any length.

Kept apart from the record checks (`serving.schema`), which word the errors raised here."""
from __future__ import annotations

import json
from typing import Any


def load_json(body: bytes) -> Any:
    # Decoded here, strictly as UTF-8 (a BOM allowed): json.loads of bytes also takes UTF-16 and UTF-32, and lets
    # a surrogate encoded as bytes through ("\xed\xa0\x80"), which no escape check sees and pandas then fails
    # on (500, and a traceback in the server's log for a 40-byte request).
    body = body.decode("utf-8-sig")
    try:
        return json.loads(body, object_pairs_hook=_once_each)
    except ValueError as exc:
        if type(exc) is not ValueError:     # JSONDecodeError, UnicodeDecodeError: the caller words those
            raise
    # Python refuses to convert an integer literal of over 4300 digits (sys.get_int_max_str_digits). Such a
    # number is beyond a double's range anyway: parse again with it read as a float (inf), which the record
    # checks then name. Only then: a parse_int hook costs a Python call per integer.
    return json.loads(body, parse_int=_int_or_float, object_pairs_hook=_once_each)


class RepeatedKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _once_each(pairs: list) -> dict:
    # A key given twice in one object ({"temp": 300, "temp": 900}): json keeps the last without a word, where a
    # proxy, a firewall or the request log may read the first. Refused; the hook costs ~10 µs a one-record
    # request, 3% of a 1,000-record one.
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        raise RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return d


def _int_or_float(text: str):
    try:
        return int(text)
    except ValueError:
        return float(text)
