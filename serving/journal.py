"""Prediction-log journals (`serving.predlog`): each replica's writer appends a second's records at a time to an
Arrow IPC stream, its journal, holding a flock on it until the journal is published as a Parquet file. Every
complete batch of a journal reads back whatever happens to its writer after it: a logger starting takes over the
journals of writers that were killed (`recover_stale_journals`) and publishes them.
"""
from __future__ import annotations

import fcntl
import glob
import logging
import os
import time
from typing import Optional

logger = logging.getLogger("ray.serve")

ROW_GROUP_ROWS = 65536     # rows per row group of a published file
JOURNAL_NAME = b"trainyard.predlog.name"       # the journal's schema metadata: its Parquet file's name
JOURNAL_DEST = b"trainyard.predlog.dest"       # ... and where it goes on object storage (the log's URI and app)
OUT_SUFFIX = ".out"                            # the Parquet file being made from a journal, beside it


def publish_journal(temp: str, name: str, folder: str, fs, local: bool) -> int:
    """Make the Parquet file `name` in `folder` (on `fs`) of the complete batches of the journal `temp`, in row
    groups of ROW_GROUP_ROWS, then remove the journal. Returns its rows. The caller holds the journal's lock. A
    journal cut short (its writer killed mid-batch) gives what it holds; one that cannot be published (storage
    failing) stays, for the next logger to start."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    out, rows = temp + OUT_SUFFIX, 0
    try:
        with pa.memory_map(temp) as source:
            reader = pa.ipc.open_stream(source)
            schema = reader.schema.remove_metadata()
            with pq.ParquetWriter(out, schema, compression="zstd") as writer:
                group: list = []
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        batch = None
                    except (pa.ArrowInvalid, OSError):      # the batch its killed writer was appending
                        batch = None
                    if batch is not None:
                        group.append(batch)
                    if group and (batch is None or sum(b.num_rows for b in group) >= ROW_GROUP_ROWS):
                        writer.write_table(pa.Table.from_batches(group, schema=schema))
                        rows += sum(b.num_rows for b in group)
                        group = []
                        time.sleep(0)     # let the request path have the GIL between row groups
                    if batch is None:
                        break
        if rows and local:
            os.replace(out, os.path.join(folder, name))
        elif rows:
            pafs.copy_files(out, f"{folder}/{name}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
        os.unlink(temp)         # only once published: a failure above leaves the journal whole
    finally:
        if os.path.exists(out):
            os.unlink(out)
    return rows


def locked(path: str) -> int:
    """A descriptor of a new file `path` holding an exclusive flock on it. Created under another name and renamed
    once locked (the lock stays with the file): no moment when `recover_stale_journals` could see it unlocked."""
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT, 0o600)     # request records: this user's only
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.replace(path + ".new", path)
    return fd


# A writer's `<temp>.new` is unlocked only between its creation and its flock (microseconds): one older than this
# was left by a writer killed in that window.
NEW_FILE_STALE_S = 60.0


def recover_stale_journals(pattern: str, dest: str, folder: str, fs, local: bool) -> dict[str, int]:
    """Take over this user's journals matching `pattern` that no process holds locked (each writer holds a flock
    on its journal from its creation until it is published; the kernel drops the lock when the writer dies): what
    a SIGKILLed replica left, never a live writer's. On object storage only those bound for `dest` (this logger's
    URI and app): a journal of another app or bucket waits for a logger of its own. Each one's complete batches
    become the Parquet file its writer would have made, in `folder` (for a local log, the journal's own folder),
    unless that file is there already (its writer was killed between the two steps); one that cannot be read (an
    older trainyard's Parquet temp, never readable without its footer) is removed, and one that cannot be
    published stays. Also removes the `.new` names `locked` creates journals under, once unlocked and older than
    NEW_FILE_STALE_S. Returns {path: rows published} of the journals taken over."""
    import pyarrow as pa

    taken: dict[str, int] = {}
    now = time.time()
    news = [p for p in glob.glob(pattern + ".new") if _age_s(p, now) > NEW_FILE_STALE_S]
    for path in glob.glob(pattern) + news:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:        # gone meanwhile (published, or taken over by another replica starting)
            continue
        try:
            if os.fstat(fd).st_uid != os.getuid():      # another user's logs: theirs to publish, with their rights
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:    # a live writer holds it
                continue
            meta = _journal_meta(path)
            if meta is not None and not local and meta[1] != dest:
                continue       # another destination's: left, unlocked, for a logger of its own
            there = os.path.dirname(path) if local else folder
            if meta is not None and not _published(there, meta[0], fs, local):
                taken[path] = publish_journal(path, meta[0], there, fs, local)
            else:
                taken[path] = 0
            for leftover in (path, path + OUT_SUFFIX):
                if os.path.exists(leftover):
                    os.unlink(leftover)
        except (OSError, pa.ArrowException) as exc:     # storage failing: the journal stays for the next logger
            logger.warning(f"prediction log: could not publish {path}, left by a writer that was killed: {exc}")
        finally:
            os.close(fd)
    if taken:
        logger.warning(f"prediction log: took over {len(taken)} file(s) of writers that were killed before "
                       f"publishing them, {sum(taken.values())} record(s) published: {', '.join(taken)}")
    return taken


def _journal_meta(path: str) -> Optional[tuple[str, str]]:
    """(the Parquet file's name, its destination) of a journal; None for a file that is no journal."""
    import pyarrow as pa
    try:
        with pa.memory_map(path) as source:
            meta = pa.ipc.open_stream(source).schema.metadata or {}
    except (pa.ArrowException, OSError):
        return None
    return (meta[JOURNAL_NAME].decode(), meta.get(JOURNAL_DEST, b"").decode()) if JOURNAL_NAME in meta else None


def _published(folder: str, name: str, fs, local: bool) -> bool:
    import pyarrow.fs as pafs
    if local:
        return os.path.exists(os.path.join(folder, name))
    return fs.get_file_info(f"{folder}/{name}").type != pafs.FileType.NotFound


def _age_s(path: str, now: float) -> float:
    try:
        return now - os.path.getmtime(path)
    except OSError:           # gone meanwhile
        return 0.0
