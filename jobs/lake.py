"""What data lake exports bring beside the tables: compressed shards (part-1.csv.gz) and Hive-style key=value
folder names (site=A/date=2026-01-01/). `jobs.datafiles` refuses the first by name and reads the files' own
columns only; these say so.
"""
from __future__ import annotations

import os

from jobs.infer import DataError

_TABLES = (".parquet", ".pq", ".csv", ".tsv", ".json", ".jsonl")
_COMPRESSION = (".gz", ".bz2", ".zst", ".zstd", ".xz", ".lz4", ".zip", ".snappy")


class CompressedFiles(DataError):
    """`data.path` (or a table to predict) holds compressed files: named, with how to fix it."""


def refuse_compressed(paths: list[str]) -> None:
    """Raise a DataError naming the compressed tables among `paths` (part-1.csv.gz): a folder's listing skipped
    them without a word, and a job trained on half its rows. Refused rather than read: every reader of a CSV's raw
    bytes (its header, encoding and separator checks, the split's own pass) would need to decompress them."""
    packed = [f for f in paths if os.path.splitext(f)[1].lower() in _COMPRESSION
              and os.path.splitext(os.path.splitext(f)[0])[1].lower() in _TABLES]
    if packed:
        shown = ", ".join(packed[:3]) + (f" and {len(packed) - 3} more" if len(packed) > 3 else "")
        raise CompressedFiles(f"data.path holds {len(packed)} compressed file(s) ({shown}), which trainyard does not "
                              "read: decompress them (e.g. gunzip FILE), or save each as Parquet, e.g. with pandas: "
                              "pd.read_csv('part-1.csv.gz').to_parquet('part-1.parquet') (Parquet compresses by "
                              "itself)")


def folder_partitions(files: list[str], columns, path: str | list[str]) -> dict[str, str]:
    """Hive-style folder names (site=A/date=2026-01-01/) of `files`, below the folders `path` (data.path) names,
    whose key is no column of the files: {key: one folder}. trainyard reads the files' own columns only (Ray Data
    parses such names into columns by default, and put a folder's value over a column of the same name in the
    file). Folders above the data (/mnt/run=7/data/) are not the data's."""
    roots = [_root(entry) for entry in (path if isinstance(path, list) else [path])]
    found: dict[str, str] = {}
    for f in files:
        root = max((r for r in roots if f.startswith(r + "/")), key=len, default=None)
        for part in f[len(root) + 1:].split("/")[:-1] if root is not None else []:
            key, eq, value = part.partition("=")
            if eq and key and value and key not in columns and key not in found:
                found[key] = part
    return found


def glob_base(entry: str) -> tuple[str, "int | None"]:
    """(the folder a data.path entry starts from: itself, or the folder above its first wildcard; where that
    wildcard is, or None). One rule for `jobs.datafiles.resolve_files` and the partition keys below."""
    wild = next((i for i, ch in enumerate(entry) if ch in "*?["), None)
    if wild is None:
        return entry, None
    head = entry[:wild]
    return (head.rsplit("/", 1)[0] or "/" if "/" in head else "."), wild


def _root(entry: str) -> str:
    """The folder a data.path entry starts from, as `resolve_files` names its files (a URI without its scheme)."""
    entry = entry.split("://", 1)[1] if "://" in entry else os.path.abspath(os.path.expanduser(entry))
    return glob_base(entry)[0].rstrip("/")


def partition_hint(column: str, files: list[str], columns, path: str | list[str]) -> str:
    """" (it is only in folder names, site=A/: ...)" when `column` is a folder partition of `files`, else ""."""
    folder = folder_partitions(files, columns, path).get(column)
    return (f" (it is only in folder names, {folder}/: trainyard reads the files' own columns; write it into the "
            "files to use it)" if folder else "")
