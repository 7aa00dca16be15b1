"""Prediction logs (`serve.log`): each replica appends every sampled request's records, their predictions, the
request's id and time to Parquet files that `trainyard monitor --logs` reads.

Layout: `<path>/<app>/part-<UTC yyyymmddTHHMMSS>-<replica>-<seq>.parquet` (the time the file was started), one
row per record: `request_id` string, `record` int32 (its position in the request), `time` timestamp[ms, UTC],
`model_version` string, `prediction` (the class label, or float64 for regression), for classification
`probabilities` list<float32> (each class's, in the order of schema.json's label.classes: what `trainyard monitor`
scores a binary model's realised ROC-AUC with once labels arrive), then `feature.<name>` per
watched quantity (`jobs.watched`): float64 for numbers, the canonical string for categories
(`jobs.fitted.canonical`, as the preprocessor matches them); of a text feature its length and emptiness, of an
image its width and height as sent, never the text or the pixels themselves. Features in `exclude` have no
column at all, nor have the quantities derived from them. Last, `keep.<name>` string per request field in `keep`
(fields that are not features: a machine's id), as sent, in the canonical text (null where a record left it out).

The request path (`PredictionLogger.log`) only decides the sample and appends the logged values, copied into
tuples of plain values, to a bounded list: ~1 µs a request plus ~0.1 µs a record, no lock held for long, never
waiting. Tuples (`jobs.watched.RowCopier`), because the garbage collector stops tracking tuples of strings and
numbers within two passes: the request's own lists, held here for up to FLUSH_S, would survive into the oldest
generation, whose growth sets off full collections of the replica's whole heap (Ray, torch, FastAPI: ~150 ms
each, measured), a pause every request in flight waits out. One thread per replica turns them into Arrow
columns, a few thousand records at a time (never holding the GIL for long), and appends them every FLUSH_S to
a hidden local journal: an Arrow IPC stream (zstd), whose every complete batch can be read back whatever
happens to the writer after it. The journal becomes a Parquet file, visible only once complete, when it passes
rotate_mb or rotate_s, or at shutdown: renamed into place on a local path, uploaded in one put on object
storage. Readers (pyarrow, Ray Data) never see a half-written file.

A SIGKILLed replica (or one killed for memory) loses what it had not appended yet, about FLUSH_S of records:
before, its open Parquet file was unreadable without its footer, and up to rotate_s (300 s) of logs went with it.
Each writer holds an advisory lock (flock) on its journal; the kernel drops it when the process ends, SIGKILL
included. A logger starting takes over the journals no process holds locked (`recover_stale_journals`): what a
killed writer left, never one another live replica is writing. It publishes their complete batches under the
name the killed writer would have used (in the journal's metadata, with its destination), and removes them.
Pyarrow has no append mode for Parquet that survives a crash (a file is readable only once its footer is
written), hence the journal.
"""
from __future__ import annotations

import difflib
import itertools
import logging
import os
import random
import secrets
import tempfile
import threading
import time
from datetime import datetime, timezone
from itertools import chain
from typing import Optional, Sequence

from jobs.watched import FEATURE_PREFIX, KEEP_PREFIX, PROBABILITIES, RowCopier, Watched, columns, of_schema
from serving.journal import JOURNAL_DEST, JOURNAL_NAME, locked, publish_journal, recover_stale_journals
# The writer converts what requests left every FLUSH_S (so at most that long of records wait as Python objects)
# and appends them to its journal (serving/journal.py), a Parquet file of row groups once published.
FLUSH_S = 1.0
# Records converted per step (~0.5 ms of CPU, holding the GIL); the writer lets the request path have the GIL
# between steps. A request that arrives during a step waits it out: at 2,048 records (~1.4 ms) those waits were
# what logging added to the p99 at 16 clients.
CHUNK_RECORDS = 512
CLOSE_TIMEOUT_S = 15.0    # below Serve's graceful_shutdown_timeout_s (20 s), after which the replica is killed
REMOTE_TEMP_PREFIX = "trainyard-predlog-"    # a URI log's open file, in the local temporary folder

logger = logging.getLogger("ray.serve")


def excluded_not_features(schema: dict, exclude: list[str]) -> list[str]:
    """The names in `exclude` that are not input features of the bundle whose schema.json is `schema`."""
    names = {f["name"] for f in schema["features"]}
    return [name for name in exclude if name not in names]


def check_log_settings(schema: dict, log: Optional[dict]) -> None:
    """Raise ValueError, naming the setting and the bundle's features, for a `serve.log.exclude` entry that is
    not a feature: a misspelt personal field would otherwise be written to every log file."""
    if not log:
        return
    wrong = excluded_not_features(schema, log.get("exclude") or [])
    if wrong:
        # Said so a privacy reader does not take it the other way: a field that is no feature is never logged.
        features = [f["name"] for f in schema["features"]]
        near = {w: m[0] for w in wrong if (m := difflib.get_close_matches(w, features, n=1, cutoff=0.6))}
        meant = " Did you mean " + ", ".join(f"{m!r} for {w!r}" for w, m in near.items()) + "?" if near else ""
        raise ValueError(f"serve.log.exclude names {wrong}, which the bundle does not have as input features: only "
                         "features are logged, so a field that is not one never reaches a log file, while a "
                         f"misspelt feature would stay in every one.{meant} Remove it, or fix the spelling; its "
                         f"features are {features}")
    names = {f["name"] for f in schema["features"]}
    if features := [name for name in log.get("keep") or [] if name in names]:
        raise ValueError(f"serve.log.keep names {features}, input feature(s) of the bundle: features are logged "
                         f"already (as feature.<name>); keep is for request fields that are not features (ids). "
                         "Remove them from keep")
    label = (schema.get("label") or {}).get("name")
    if label in (log.get("keep") or []):
        raise ValueError(f"serve.log.keep names {label!r}, the bundle's label: a request's label is not logged as "
                         "one; give labels to `trainyard monitor --labels` (joined on request_id). Remove it from "
                         "keep")


def arrow_schema(schema: dict, watched: list[Watched], keep: Sequence[str] = ()):
    """The Arrow schema of the log files of a bundle (its schema.json) logging these quantities, and the request
    fields in `keep` as text."""
    import pyarrow as pa
    classifier = schema["task"] == "classification"
    return pa.schema([("request_id", pa.string()), ("record", pa.int32()), ("time", pa.timestamp("ms", tz="UTC")),
                      ("model_version", pa.string()), ("prediction", pa.string() if classifier else pa.float64())]
                     + [(PROBABILITIES, pa.list_(pa.float32()))] * classifier
                     + [(FEATURE_PREFIX + w.name, pa.float64() if w.kind == "numeric" else pa.string())
                        for w in watched]
                     + [(KEEP_PREFIX + name, pa.string()) for name in keep])


class RequestIds:
    """Request ids unique across replicas, at a fraction of uuid4's cost (which took ~4% of a replica's event
    loop: a system call for 16 random bytes per request): 64 random bits drawn once per process, then a
    counter, as 32 hex digits."""

    def __init__(self):
        self._pid = None

    def __call__(self) -> str:
        if self._pid != os.getpid():       # drawn again in a forked child, which would repeat its parent's ids
            self._pid, self._prefix, self._count = os.getpid(), secrets.token_hex(8), itertools.count()
        return f"{self._prefix}{next(self._count):016x}"


new_request_id = RequestIds()


class PredictionLogger:
    """One replica's prediction log. `log()` from the request path; `close()` at shutdown writes what is left."""

    def __init__(self, log: dict, *, app: str, replica: str, schema: dict, version: str):
        import pyarrow.fs as pafs

        self.sample = float(log.get("sample", 1.0))
        self.rotate_bytes = int(float(log.get("rotate_mb", 64.0)) * 2**20)
        self.rotate_s = float(log.get("rotate_s", 300.0))
        self.buffer_records = int(log.get("buffer_records", 20000))
        self.watched = of_schema(schema, list(log.get("exclude") or []))
        self.keep = list(log.get("keep") or [])
        self.schema = arrow_schema(schema, self.watched, self.keep)
        self.version = version
        self.replica = replica
        # Only the watched fields are copied on arrival: the buffer never holds what is not written (excluded
        # personal data, decoded images).
        self._copy = RowCopier([w.field for w in self.watched] + self.keep)
        path = log["path"]
        if "://" in path:
            self.fs, base = pafs.FileSystem.from_uri(path)
            self.local = False
        else:
            self.fs, base = pafs.LocalFileSystem(), path
            self.local = True
        self.folder = f"{base.rstrip('/')}/{app}"
        try:
            self.fs.create_dir(self.folder, recursive=True)
        except OSError as exc:     # the replica's error is what a failed deploy shows: make it say what to do
            raise OSError(f"serve.log.path {path!r}: cannot create {self.folder} ({exc}); give a folder this node "
                          "can write (on several nodes, one they all mount) or a URI (s3://bucket/prefix)") from None
        # logged: accepted by log(); published: in visible files (the difference is buffered, or lost to errors).
        self.stats = {"logged_requests": 0, "logged_records": 0, "dropped_records": 0, "published_records": 0,
                      "files": 0, "write_errors": 0}
        # What killed writers left (this replica's predecessor included): published and removed now, or it stays
        # for good.
        # A journal names where it goes (`dest`): on object storage, the log's URI and app as given, so a logger
        # takes over only the journals of its own destination (others of the node's temporary folder wait for
        # theirs); in a local folder, that folder, whatever path a node mounts it at.
        self.dest = "" if self.local else f"{path.rstrip('/')}/{app}"
        self._publishers: list[threading.Thread] = []
        stale = recover_stale_journals(os.path.join(self.folder, ".part-*.parquet.tmp") if self.local else
                                       os.path.join(tempfile.gettempdir(), REMOTE_TEMP_PREFIX + "*.tmp"),
                                       self.dest, self.folder, self.fs, self.local)
        self.stats["stale_temps_removed"] = len(stale)
        self.stats["recovered_records"] = sum(stale.values())
        self._pending: list[tuple] = []
        self._pending_records = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._seq = 0
        self._file: Optional[dict] = None        # the open journal: writer, temp path, final name, deadline
        self._thread = threading.Thread(target=self._run, name="trainyard-predlog", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------------ request path
    def log(self, request_id: str, records: list[dict], predictions: list,
            probabilities: Optional[list] = None) -> bool:
        """Queue one request for the log if it is sampled; False when not sampled or dropped (buffer full).
        `probabilities`: a classifier's, one list per record (written as null without them)."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return False
        n = len(records)
        # Tuples of plain values, not references to the request's lists and dicts: see the module docstring (GC).
        entry = (request_id, int(time.time() * 1000), self._copy(records), tuple(predictions),
                 None if probabilities is None else tuple(map(tuple, probabilities)))
        with self._lock:
            if self._closing or self._pending_records + n > self.buffer_records:
                self.stats["dropped_records"] += n
                return False
            self._pending.append(entry)
            self._pending_records += n
            self.stats["logged_requests"] += 1
            self.stats["logged_records"] += n
            early = self._pending_records >= self.buffer_records // 4
        if early:       # a burst: convert now rather than at the next FLUSH_S, before the buffer fills
            self._wake.set()
        return True

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is buffered and publish the open file; safe to call more than once."""
        with self._lock:
            self._closing = True
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        self._thread.join(timeout_s)
        for thread in list(self._publishers):   # a journal not published in time stays for the next replica
            thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            deadline = self._file["deadline"] if self._file else float("inf")
            self._wake.wait(max(0.0, min(FLUSH_S, deadline - time.monotonic())))
            self._wake.clear()
            with self._lock:
                taken, self._pending, self._pending_records = self._pending, [], 0
                closing = self._closing
            try:
                for chunk in _chunks(taken, CHUNK_RECORDS):
                    self._add(self._to_batch(chunk))
                    time.sleep(0)      # release the GIL between steps: the event loop serves requests meanwhile
                if self._file and (closing or time.monotonic() >= self._file["deadline"]):
                    self._publish()
            except Exception:   # noqa: BLE001 - storage failing must not stop the replica, nor this thread
                self.stats["write_errors"] += 1
                logger.exception(f"prediction log: writing to {self.folder} failed; the records written so far stay "
                                 "in the open journal, which the next replica to start publishes; logging goes on "
                                 "with a new file")
                self._discard()
            if closing:
                return

    def _to_batch(self, taken: list[tuple]):
        """One RecordBatch of queued entries: the per-request columns repeated with numpy, the features transposed
        with zip and converted by pyarrow in C, canonical() per value only for categories that are not all
        strings already."""
        import numpy as np
        import pyarrow as pa

        ids, times, rows, predictions, probabilities = zip(*taken)     # one pass over the requests, in C
        counts = np.fromiter(map(len, rows), np.int64, len(taken))
        total = int(counts.sum())
        request = np.repeat(np.arange(len(taken)), counts)
        positions = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        flat = list(chain.from_iterable(rows))
        values = columns(self.watched, flat)
        arrays = [pa.array(ids, pa.string()).take(request), pa.array(positions, pa.int32()),
                  pa.array(np.array(times, np.int64)[request], pa.timestamp("ms", tz="UTC")),
                  pa.repeat(pa.scalar(self.version, pa.string()), total)]
        predictions = list(chain.from_iterable(predictions))
        arrays.append(_strings(predictions) if self.schema.field("prediction").type == pa.string()
                       else _floats(predictions))
        if PROBABILITIES in self.schema.names:
            arrays.append(_lists(probabilities, counts))
        for w, column in zip(self.watched, values):
            arrays.append(_floats(column) if w.kind == "numeric" else _strings(column))
        if self.keep:       # after the watched fields in each copied row: as sent, in the canonical text
            kept = list(zip(*flat))[len(self.watched):] if flat else [()] * len(self.keep)
            arrays.extend(_strings(list(column)) for column in kept)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _add(self, batch) -> None:
        import pyarrow as pa

        if self._file is None:
            started = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
            name = f"part-{started}-{self.replica}-{self._seq:06d}.parquet"
            self._seq += 1
            # Hidden (a leading '.') and not ending in .parquet: pyarrow datasets and Ray Data skip it until renamed.
            temp = (os.path.join(self.folder, f".{name}.tmp") if self.local
                    else os.path.join(tempfile.gettempdir(), f"{REMOTE_TEMP_PREFIX}{name}.tmp"))
            lock = locked(temp)         # held until the journal is published: see recover_stale_journals
            sink = pa.OSFile(temp, "wb")     # unbuffered: each batch reaches the kernel as it is written
            writer = pa.ipc.new_stream(sink, self.schema.with_metadata({JOURNAL_NAME: name, JOURNAL_DEST: self.dest}),
                                       options=pa.ipc.IpcWriteOptions(compression="zstd"))
            self._file = {"sink": sink, "writer": writer, "temp": temp, "name": name,
                          "deadline": time.monotonic() + self.rotate_s, "rows": 0, "lock": lock}
        self._file["writer"].write_batch(batch)
        self._file["rows"] += batch.num_rows
        if self._file["sink"].tell() >= self.rotate_bytes:
            self._publish()

    def _publish(self) -> None:
        """Finish the open journal and make it visible, as Parquet, on a thread of its own: converting a journal of
        rotate_mb takes seconds, while this thread goes on draining requests into a new one."""
        f, self._file = self._file, None
        try:
            f["writer"].close()
            f["sink"].close()
        except Exception:        # its complete batches stay, unlocked, for the next logger to start
            os.close(f["lock"])
            raise
        thread = threading.Thread(target=self._publish_closed, args=(f,), name="trainyard-predlog-publish",
                                  daemon=True)
        self._publishers = [t for t in self._publishers if t.is_alive()] + [thread]
        thread.start()

    def _publish_closed(self, f: dict) -> None:
        try:
            rows = publish_journal(f["temp"], f["name"], self.folder, self.fs, self.local)
            self.stats["files"] += 1
            self.stats["published_records"] += rows
        except Exception:   # noqa: BLE001 - storage failing must not stop the replica
            self.stats["write_errors"] += 1
            logger.exception(f"prediction log: publishing {f['name']} to {self.folder} failed; its records stay in "
                             f"{f['temp']}, which the next replica to start publishes")
        finally:
            os.close(f["lock"])

    def _discard(self) -> None:
        """After a failed write: the journal's complete batches stay (unlocked), for the next logger to start."""
        f, self._file = self._file, None
        if f is not None:
            for part in ("writer", "sink"):
                try:
                    f[part].close()
                except Exception:   # noqa: BLE001 - already failing
                    pass
            os.close(f["lock"])


def _chunks(taken: list[tuple], records: int):
    """`taken` in consecutive runs of about `records` records (a request is never split)."""
    chunk, n = [], 0
    for entry in taken:
        chunk.append(entry)
        n += len(entry[2])
        if n >= records:
            yield chunk
            chunk, n = [], 0
    if chunk:
        yield chunk


def _strings(values):
    """string Arrow array of category values (or class labels) as `jobs.fitted.canonical` writes them. Values that
    are all strings (and nulls), the usual case, are already canonical: pyarrow converts them in C."""
    import pyarrow as pa

    from jobs.fitted import canonical
    try:
        out = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):     # mixed types, huge ints: canonical() below
        out = None
    except UnicodeEncodeError:      # a lone surrogate the checks missed: that value replaced, not the file lost
        values = [v.encode("utf-8", "replace").decode() if isinstance(v, str) else v for v in values]
        return _strings(values)
    if out is not None and out.type == pa.string():
        return out
    if out is not None and (pa.types.is_integer(out.type) or pa.types.is_boolean(out.type)):
        # Integer class labels (0/1), the usual classification case: Arrow's cast writes str(int) and
        # "true"/"false", as canonical() does, in C (canonical() per value took half the writer's time).
        return out.cast(pa.string())
    if out is not None and out.type == pa.null():
        return pa.nulls(len(out), pa.string())
    return pa.array([canonical(v) for v in values], pa.string())


def _lists(per_request: tuple, counts) -> "pa.ListArray":
    """list<float32> Arrow array of each record's class probabilities (tuples; pyarrow converts them in C, faster
    than flattening through numpy, measured); a request logged without them gives its records nulls."""
    import pyarrow as pa

    rows = chain.from_iterable((None,) * int(n) if p is None else p for p, n in zip(per_request, counts))
    return pa.array(list(rows), pa.list_(pa.float32()))


def _floats(values):
    """float64 Arrow array of JSON numbers and nulls. pyarrow refuses an int beyond 2**53 for float64 (not exactly
    representable), which the request checks let through: those take the slower, exact path through float()."""
    import pyarrow as pa
    try:
        return pa.array(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
