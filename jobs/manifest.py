"""A bundle's `manifest.json`: every file's size and SHA-256, written last (trainyard's mark that the bundle is
complete) and checked when the bundle is loaded, so that a file changed, cut short or swapped after the bundle
was published (a hand edit, a partial copy, a damaged disk) is named before it is served, rather than loading
into a model that answers with the wrong numbers. It guards against accidents, not an attacker: whoever can
write the files can write the manifest too.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

NAME = "manifest.json"
FORMAT = "trainyard-bundle"
_SKIP = (NAME, ".trainyard-partial")     # the manifest itself; the mark of a folder still being written


def digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write(folder: Path, version: str) -> None:
    """Write FOLDER/manifest.json for every file under `folder`. A bundle is never changed once published;
    tests that make a variant of one (another version, another policy) call this after their edit, as the
    bundle writer would have."""
    files = {}
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in _SKIP):
        files[f.relative_to(folder).as_posix()] = {"bytes": f.stat().st_size, "sha256": digest(f)}
    (Path(folder) / NAME).write_text(json.dumps({"format": FORMAT, "version": version, "files": files}, indent=2))


def problems(folder: Path) -> Optional[list[str]]:
    """What differs between `folder` and its manifest: each file missing, of another size or another SHA-256,
    named. None when the folder has no manifest (bundles written before manifests load without the check).
    Files the manifest does not list are not looked at (a `.DS_Store`, a note the user put beside them)."""
    path = Path(folder) / NAME
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        listed = {str(rel): (int(f["bytes"]), str(f["sha256"])) for rel, f in doc["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [f"{NAME} cannot be read ({type(exc).__name__}: {exc})"]
    root = Path(folder).resolve()
    # Links anywhere in it, listed or not (a profile.json linked to a file outside was read as the bundle's).
    found = [f"{p.relative_to(folder)} is a link, which no bundle holds" for p in sorted(Path(folder).rglob("*"))
             if p.is_symlink() and p.relative_to(folder).as_posix() not in listed]
    for rel, (size, sha) in sorted(listed.items()):
        f = Path(folder) / rel
        if f.is_symlink() or not f.resolve().is_relative_to(root):
            # trainyard writes neither: a manifest naming ../../etc/hostname, or a file linked outside, read a
            # file outside the bundle (and said its size).
            found.append(f"{rel} is {'a link' if f.is_symlink() else 'outside the bundle'}, which no bundle holds")
        elif not f.is_file():
            found.append(f"{rel} is missing")
        elif f.stat().st_size != size:
            found.append(f"{rel} has {f.stat().st_size:,} bytes, the manifest {size:,}")
        elif digest(f) != sha:
            found.append(f"{rel} has changed (its SHA-256 is not the manifest's)")
    return found
