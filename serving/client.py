"""A small client for a trainyard server: records, a DataFrame or a file in, predictions out.

    from serving import Client
    client = Client("http://127.0.0.1:8000", token=None)
    client.predict([{"rpm": 1500, "machine_type": "L"}])      # {"predictions": [...], "probabilities": ...}
    client.predict_frame(df)                                    # df's rows → a DataFrame of predictions
    client.predict_file("rows.csv", out="predictions.csv")      # .csv, .parquet or .jsonl

Requests go out in chunks of at most the server's max_records and max_body_mb; an error names the record by its index in
*your* input, not in the chunk. Standard library only (http.client with keep-alive): one Client per thread.
"""
from __future__ import annotations

import http.client
import json
import math
import time
from typing import Any, Callable, Collection, Iterator, Optional
from urllib.parse import urlparse

from cluster.errors import EXIT_BAD_INPUT, BadInput, Failure
from serving.tables import TableError, numbers_read_as_text, read_used, write_table


FRAME_SLICE = 20_000        # rows of a frame made records at a time (`predict_frame`)


class ClientError(Failure):
    """The server refused a request (4xx) or could not be reached; `status` is None when unreachable.
    Exit 2 when the server refused what was sent (4xx: the rows must change), 1 otherwise."""

    def __init__(self, message: str, status: Optional[int] = None, errors: Optional[list] = None):
        super().__init__(message, exit_code=EXIT_BAD_INPUT if status is not None and 400 <= status < 500 else None)
        self.status = status
        self.errors = errors or []


class Client:
    def __init__(self, url: str, token: Optional[str] = None, *, timeout: float = 60.0,
                 batch_size: Optional[int] = None, retries: int = 3):
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ClientError(f"--url {url!r}: expected http://HOST:PORT[/prefix], e.g. http://127.0.0.1:8000")
        self.url = url.rstrip("/")
        self._https = parsed.scheme == "https"
        self._host, self._port = parsed.hostname, parsed.port or (443 if self._https else 80)
        self._prefix = parsed.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self._batch_size = batch_size
        self._schema: Optional[dict] = None
        self._conn: Optional[http.client.HTTPConnection] = None

    # ------------------------------------------------------------------------------------------ HTTP
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, method: str, path: str, body: Optional[bytes] = None) -> tuple[int, Any]:
        """(status, parsed JSON body). Retries a dropped connection, and 503 (no replica ready yet, e.g.
        while Serve starts), with backoff; every request here is safe to repeat."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        delay, last = 0.2, None
        for attempt in range(self.retries + 1):
            try:
                conn = self._connection()
                conn.request(method, self._prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status != 503 or attempt == self.retries:
                    return resp.status, _json_or_text(raw)
                last = f"503 {raw[:200]!r}"
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self.close()
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise ClientError(f"cannot reach {self.url}{path}: {last}. Is `trainyard serve` running there?")

    def _get(self, path: str) -> Any:
        status, data = self.request("GET", path)
        if status != 200:
            raise _error(status, data, f"GET {path}")
        return data

    # ------------------------------------------------------------------------------------------ API
    def health(self) -> bool:
        try:
            return self.request("GET", "/healthz")[0] == 200
        except ClientError:
            return False

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz")[0] == 200
        except ClientError:
            return False

    def schema(self) -> dict:
        if self._schema is None:
            try:
                self._schema = self._get("/schema")
            except ClientError as exc:
                route = next((r for r in ("/predict", "/schema", "/docs", "/healthz", "/readyz", "/monitor")
                              if self.url.endswith(r)), None)
                if exc.status == 404 and route:    # the curl-style URL of an endpoint, not the server's
                    raise ClientError(f"{exc}; give the server's URL without {route}: "
                                      f"{self.url[:-len(route)] or self.url}", status=404) from None
                raise
        return self._schema

    def says_row_notes(self) -> bool:
        """Whether this server's answers name the records with numbers outside the training range, unseen
        categories and empty features (`out_of_range`, `unseen_categories`, `imputed`): a trainyard server from
        before 2026-12-06 answers none of them, which it tells by giving no number feature a `trained_on` range in
        /schema. Taken as yes for a model without number features (nothing tells)."""
        numbers = [f for f in self.schema()["features"] if f.get("type") == "number"]
        return not numbers or any("trained_on" in f for f in numbers)

    @property
    def batch_size(self) -> int:
        limit = int(self.schema().get("limits", {}).get("max_records", 1000))
        if self._batch_size and self._batch_size > limit:
            raise BadInput(f"--batch-size {self._batch_size} is above this server's max_records, {limit} records "
                           f"a request (GET /schema); give {limit} or less, or leave it out to send {limit}")
        return self._batch_size or limit

    def predict(self, records: list[dict], names: Optional[list[str]] = None,
                progress: Optional[Callable[[int, int], None]] = None) -> dict:
        """Predictions for `records` ({feature: value}); sent in chunks of batch_size, answers joined in
        order. Returns {"predictions", "probabilities" (classification), "model", "request_ids" (one per request
        sent, with the number of records it carried: [[id, n], ...]), "out_of_range" (when the server said any:
        the numbers outside the train split's range, each record counted from the first of `records`)}.
        `names`: what each record is to the user (an image's file), named beside its number in a refusal;
        `progress(done, total)`: called with the records answered so far after each request."""
        if not isinstance(records, (list, tuple)) or not all(isinstance(r, dict) for r in records):
            # A DataFrame iterates as its column names: "'str' object has no attribute 'items'" from _clean.
            frame = "; for a DataFrame, predict_frame(df) gives one row of predictions per row" if hasattr(
                records, "to_dict") else ""
            raise BadInput(f"predict takes a list of records ({{feature: value}}), not {type(records).__name__}"
                           f"{frame}")
        return self._predict(iter(records), len(records), names, progress)

    def _predict(self, rows: Iterator[dict], total: int, names: Optional[list[str]] = None,
                 progress: Optional[Callable[[int, int], None]] = None) -> dict:
        """`predict` of `total` records taken from `rows` as requests need them (`predict_frame` makes them a
        slice of its frame at a time)."""
        out: dict[str, Any] = {"predictions": [], "request_ids": []}
        everywhere: list[tuple[int, int, list]] = []       # per request: its first record, its records, the fields
        for start, body, chunk in self._chunks(rows):
            status, data = self._post(body, chunk, start, names)
            if status != 200:
                raise _error(status, data, "POST /predict", offset=start, names=names)
            out["predictions"].extend(data["predictions"])
            out["request_ids"].append([data.get("request_id"), len(chunk)])
            for key in ("out_of_range", "unseen_categories", "imputed", "truncated"):   # from the first record given
                for note in data.get(key, ()):
                    out.setdefault(key, []).append({**note, "record": start + note["record"]})
            everywhere.append((start, len(chunk), data.get("imputed_in_every_record") or []))
            if "probabilities" in data:
                out.setdefault("probabilities", []).extend(data["probabilities"])
            out["model"] = data.get("model")
            if progress is not None:
                progress(start + len(chunk), total)
        return _everywhere(out, everywhere)

    def _post(self, body: bytes, chunk: list[dict], start: int, names: Optional[list[str]]) -> tuple[int, Any]:
        """(status, answer) of the request for `chunk` (its records `start`... of the caller's)."""
        return self.request("POST", "/predict", body)

    def _chunks(self, rows: Iterator[dict]):
        """(index of its first record, request body, records) per request: at most batch_size records, and a body
        within the server's max_body_mb (900 camera images of 16 KB made a 14 MiB request, refused with 413, at
        the default 1,000 records). A record larger than the limit alone goes alone: the server names it. Each
        record is cleaned and encoded as its request is made: all of 300,000 first took 13 s before the first
        request and held them all."""
        limit = int(float(self.schema().get("limits", {}).get("max_body_mb", 8)) * 2**20 * 0.95)
        # Each record encoded once: its size decides the chunk, and the chunk's body is those encodings joined
        # (as json.dumps({"records": chunk}) writes it), not the records encoded a second time.
        start, batch_size, pending = 0, self.batch_size, None
        while True:
            chunk, encoded, size = [], [], 16
            while len(chunk) < batch_size:
                if pending is None:
                    record = next(rows, None)
                    if record is None:
                        break
                    record = _clean(record)
                    pending = (record, json.dumps(record).encode())
                if chunk and size + len(pending[1]) + 2 > limit:
                    break
                chunk.append(pending[0])
                encoded.append(pending[1])
                size += len(pending[1]) + 2
                pending = None
            if not chunk:
                return
            yield start, b'{"records": [' + b", ".join(encoded) + b"]}", chunk
            start += len(chunk)

    @staticmethod
    def _rows(sent) -> Iterator[dict]:
        """The records of `sent` (a frame of the columns a request carries), a slice at a time."""
        return (row for at in range(0, len(sent), FRAME_SLICE) for row in
                sent.iloc[at:at + FRAME_SLICE].to_dict("records"))

    def predict_frame(self, df, allow_missing: bool = False, names: Optional[list[str]] = None,
                      progress: Optional[Callable[[int, int], None]] = None) -> "pd.DataFrame":  # noqa: F821
        """One row of predictions per row of `df` (same index): `prediction`, for classification one
        `probability_<class>` column per class, then `request_id` and `record` (the row's position in its
        request): the key of its row in the server's prediction log, which `trainyard monitor --labels` joins
        labels on, and `out_of_range`: the row's numbers well outside the train split's range ('age=-500 (trained
        on 18 to 90)'; empty for none: `jobs.tabular.outside_range`), the server's notes kept whole in
        `attrs["out_of_range"]` (with `unseen_categories` and `imputed`; none of the three from a server that does
        not say them, `says_row_notes`). Columns that are not features (ids, the label) are not sent, except those
        the server keeps in its prediction log (GET /schema's `limits.log_keep`). `allow_missing`:
        predict even when more than half of the features have no column (`check_columns`); `names`, `progress`: as
        `predict`'s."""
        import pandas as pd
        check_columns(list(df.columns), [f["name"] for f in self.schema()["features"]], allow_missing,
                      kept=self.schema().get("limits", {}).get("log_keep") or ())
        sent = numbers_read_as_text(df[[c for c in df.columns if c in self.sent_columns()]],
                                    self.schema()["features"])
        sent = _image_bytes_as_base64(sent, self.schema()["features"])
        # A slice's records at a time (`_chunks` takes them as its requests need them): the whole frame's records
        # as dicts at once held 2,000,000 of them beside the frame.
        out = self._predict(self._rows(sent), len(sent), names, progress)
        result = pd.DataFrame({"prediction": out["predictions"]}, index=df.index)
        if "probabilities" in out:
            classes = self.schema()["label"]["classes"]
            proba = pd.DataFrame(out["probabilities"], index=df.index,
                                 columns=[f"probability_{c}" for c in classes])
            result = pd.concat([result, proba], axis=1)
        result["request_id"] = [rid for rid, n in out["request_ids"] for _ in range(n)]
        result["record"] = [i for _, n in out["request_ids"] for i in range(n)]
        if not self.says_row_notes():     # an earlier trainyard's server: empty columns would read "none found"
            return result
        outside = [[] for _ in range(len(result))]
        for note in out.get("out_of_range", ()):
            outside[note["record"]].append(f"{note['field']}={note['value']:g} ({_trained_on(note)})")
        result["out_of_range"] = ["; ".join(texts) for texts in outside]
        result.attrs["out_of_range"] = out.get("out_of_range", [])
        unseen = [[] for _ in range(len(result))]
        for note in out.get("unseen_categories", ()):
            unseen[note["record"]].append(f"{note['field']}={note['value']!r}")
        result["unseen_categories"] = ["; ".join(texts) for texts in unseen]
        result.attrs["unseen_categories"] = out.get("unseen_categories", [])
        # The features a row left empty; those the frame has no column for, in every row, are in attrs alone.
        every = [f for f in out.get("imputed_in_every_record", ()) if f in df.columns]
        imputed = [list(every) for _ in range(len(result))]
        for note in out.get("imputed", ()):
            imputed[note["record"]].append(note["field"])
        result["imputed"] = ["; ".join(fields) for fields in imputed]
        result.attrs["imputed"] = out.get("imputed", [])
        result.attrs["imputed_in_every_record"] = out.get("imputed_in_every_record", [])
        if any(f["type"] == "text" for f in self.schema()["features"]):    # text past max_length: read in part
            cut = {note["record"]: note for note in out.get("truncated", ())}
            result["truncated"] = [f"{cut[i]['tokens']} tokens, the first {cut[i]['read']} read" if i in cut else ""
                                   for i in range(len(result))]
            result.attrs["truncated"] = out.get("truncated", [])
        return result

    def sent_columns(self) -> set[str]:
        """The columns a row's request carries: the features, and the fields this server keeps in its prediction
        log (serve.log.keep: a machine's id)."""
        return ({f["name"] for f in self.schema()["features"]}
                | set(self.schema().get("limits", {}).get("log_keep") or ()))

    def predict_file(self, path, out=None) -> "pd.DataFrame":  # noqa: F821
        """Predict every row of a .csv, .parquet or .jsonl file; write the input columns plus the predictions
        to `out` (format from its extension) when given. Returns that table."""
        df = read_rows(path, self)
        table = df.join(self.predict_frame(df), rsuffix="_predicted")
        if out is not None:
            write_table(table, out)
        return table


# ---------------------------------------------------------------------------------------------- helpers

def _trained_on(note: dict) -> str:
    lo, hi = note["trained_on"]
    return f"trained on {lo:g} to {hi:g}"


def _everywhere(out: dict, requests: list[tuple[int, int, list]]) -> dict:
    """The answer of several requests as one request's: the fields no record of any request sent in
    "imputed_in_every_record", and a request's own such fields as "imputed" entries of its records."""
    every = [f for f in requests[0][2] if all(f in fields for _, _, fields in requests[1:])] if requests else []
    extra = [{"record": start + i, "field": f} for start, n, fields in requests for i in range(n)
             for f in fields if f not in every]
    if extra:
        out["imputed"] = sorted(out.get("imputed", []) + extra, key=lambda note: note["record"])
    if every:
        out["imputed_in_every_record"] = every
    return out


def read_rows(path, client: "Client") -> "pd.DataFrame":  # noqa: F821
    """`read_used` of rows to predict, by the columns a request carries (`Client.sent_columns`, asked once the
    file reads: its problems are said before any request)."""
    return read_used(path, client.sent_columns)


def check_columns(columns: list, features: list[str], allow_missing: bool = False, kept: Collection[str] = ()) -> None:
    """Refuse a rows file whose columns miss the model's features: none of them there, or one written another
    way ('RPM', ' rpm', 'rmp' for 'rpm'), or more than half of them unless `allow_missing`. Other columns (ids, the
    label) are not sent, and a feature with no column at all is imputed by the server (its required_features
    decide); these were dropped without a word, every row then getting the same imputed prediction, and a file
    meant for another model got plausible numbers, exit 0. `kept`: the fields the server keeps in its prediction
    log (serve.log.keep), sent as they are: no misspelt feature ('site' was asked "did you mean 'shift'?")."""
    import difflib

    names = [str(c) for c in columns]
    missing = [f for f in features if f not in names]
    sep = next((ch for ch in (";", "\t", "|") if len(names) == 1 and ch in names[0]), None)
    if len(missing) == len(features) and sep is not None:
        # As `train` says it of its data (jobs.datafiles): a ';'-separated file reads as one column.
        from jobs.csvfix import resave_hint
        raise TableError(f"the file reads as a single column named {names[0][:80]!r}: its fields are separated by "
                         f"{sep!r}, and a CSV here has ',' between fields. {resave_hint(sep, 'give that file')}")
    if len(missing) == len(features):
        raise TableError(f"none of the file's columns ({', '.join(map(repr, names[:10]))}) is a feature of the model "
                         f"(features: {', '.join(features)}); name the columns as the model's features (GET /schema)")
    others = [c for c in names if c not in features and c not in kept]
    folded = {c.strip().lower(): c for c in others}
    renames = []            # every one at once: a file with 'Amount' and 'cntry' was told of 'Amount' alone
    for f in missing:
        near = folded.get(f.strip().lower()) or next(iter(difflib.get_close_matches(f, others, n=1, cutoff=0.6)),
                                                     None)
        if near is not None:
            renames.append((near, f))
    if len(renames) == 1:
        near, f = renames[0]
        raise TableError(f"column {near!r} is not a feature of the model, and feature {f!r} has no column: did "
                         f"you mean {f!r}? Rename the column (features: {', '.join(features)})")
    if renames:
        raise TableError(f"{len(renames)} columns are not features of the model, and the features they look like "
                         f"have no column: did you mean "
                         + ", ".join(f"{f!r} for {near!r}" for near, f in renames)
                         + f"? Rename the columns (features: {', '.join(features)})")
    if len(missing) * 2 > len(features) and not allow_missing:
        raise TableError(f"the file has no column for {len(missing)} of the model's {len(features)} features "
                         f"({', '.join(map(repr, missing[:8]))}{', ...' if len(missing) > 8 else ''}): is it the file "
                         f"meant for this model? Its columns: {', '.join(map(repr, names[:10]))}. To predict anyway, "
                         "each missing feature imputed for every row, add --allow-missing")





def _image_bytes_as_base64(df, features: list[dict]):
    """`df` with an image feature's raw bytes (image files, or a Parquet column of encoded images, as `train`
    reads them) as the base64 text the server takes."""
    import base64

    for f in features:
        name = f["name"]
        if f.get("type") == "image" and name in df.columns and any(isinstance(v, bytes) for v in df[name]):
            df = df.assign(**{name: [base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v
                                     for v in df[name]]})
    return df


def _clean(record: dict) -> dict:
    """JSON-ready values: numpy scalars → Python, NaN/NaT/None → null (a missing value, imputed server-side)."""
    clean = {}
    for k, v in record.items():
        if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
            v = v.item()
        if v is None or (isinstance(v, float) and math.isnan(v)):
            v = None
        elif not isinstance(v, (str, int, float, bool)):
            try:
                import pandas as pd
                v = None if pd.isna(v) else str(v)
            except (TypeError, ValueError):
                v = str(v)
        clean[str(k)] = v
    return clean


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _error(status: int, data: Any, what: str, offset: int = 0, names: Optional[list[str]] = None) -> ClientError:
    if not isinstance(data, dict):
        return ClientError(f"{what}: HTTP {status}: {str(data)[:300]}", status)
    errors = []
    for e in data.get("errors", []) or []:
        e = dict(e)
        if "record" in e:
            e["record"] += offset    # the index in the caller's input, not in this chunk
        errors.append(e)
    if errors:
        named = lambda i: f" ({names[i]})" if names and 0 <= i < len(names) else ""   # noqa: E731
        lines = [", ".join(x for x in ((f"record {e['record']}{named(e['record'])}" if "record" in e else ""),
                                        (f"field {e['field']!r}" if "field" in e else "")) if x) + ": " +
                 e.get("message", "") for e in errors[:10]]
        msg = f"{what}: HTTP {status}:\n  " + "\n  ".join(l.lstrip(": ") for l in lines)
        more = len(errors) - 10 + int(data.get("errors_not_listed", 0))
        if more > 0:
            msg += f"\n  ... and {more} more"
    else:
        msg = f"{what}: HTTP {status}: {data.get('detail', data)}"
    return ClientError(msg, status, errors)
