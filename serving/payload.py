"""How a served bundle travels to Serve's replicas: its files' bytes in the deployment's arguments, or for a very
large bundle a path every node can read (`bundle_payload`), and how a replica loads it again (`load_payload`)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional

# Bundles up to this size travel inline (a pretrained text encoder's, ~90 MB, does not).
MAX_INLINE_BUNDLE_BYTES = 64 * 2**20


def bundle_payload(path: Path, source: Optional[str] = None) -> dict:
    """What replicas load the bundle from: its files' bytes (no shared filesystem needed; they travel in the
    deployment's arguments), or for a very large bundle a path every node must then be able to read: the URI of
    the version it came from (`source`, `pinned`: each replica fetches it, and checks its version), else its
    folder."""
    # A link is none of a bundle's files (trainyard writes none): one put in by hand (notes.txt -> /etc/passwd)
    # had its target's bytes shipped to every replica.
    files = {p.relative_to(path).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()}
    remote = source is not None and "://" in str(source)
    version = json.loads((path / "lineage.json").read_text()).get("version") if remote else None
    # Not the local copy a URI was fetched to: replicas on other nodes (other pods) do not have it.
    where = pinned(str(source), version) if remote else str(path.resolve())
    if sum(p.stat().st_size for p in files.values()) <= MAX_INLINE_BUNDLE_BYTES:
        # "from": where the version came from, for an update's "to serve it again" (`serving.contract.update_notes`)
        return {"files": {n: p.read_bytes() for n, p in files.items()}, "from": where}
    return {"path": where, "version": version} if remote else {"path": where}


def payload_json(payload, name: str) -> Optional[dict]:
    """A bundle file `name` (e.g. "schema.json") of a running deployment's payload (`bundle_payload`): from its
    bytes, or from its folder where this machine has it; None where neither holds it (a URI, another node's)."""
    try:
        if isinstance(payload, dict) and name in (payload.get("files") or {}):
            return json.loads(payload["files"][name])
        if isinstance(payload, dict) and "://" not in str(payload.get("path", "://")):
            return json.loads((Path(payload["path"]) / name).read_text())
    except (OSError, ValueError):
        pass
    return None


def served_from(payload) -> Optional[str]:
    """Where a running deployment's bundle version came from (its folder, or its URI), None where unknown (a
    payload of an earlier trainyard)."""
    return (payload.get("from") or payload.get("path")) if isinstance(payload, dict) else None


def pinned(uri: str, version: Optional[str]) -> str:
    """The URI of version `version`'s own folder where `uri` names a run's output (its latest bundle, or
    OUTPUT/bundle): a replica started after a retrain (a scale-up, a crashed one replaced) fetched the run's new
    latest bundle and refused it, and kept refusing until the app was deployed again. A published version never
    changes. `uri` as given when that folder does not hold the version (a bundle folder of another layout)."""
    from jobs.bundle import POINTER, VERSIONS, load

    base, mark, query = uri.partition("?")          # a pyarrow URI's options (?endpoint_override=...) stay
    base = base.rstrip("/")
    if version is None or base.endswith(f"/{VERSIONS}/{version}"):
        return uri
    run = base[:-len(f"/{POINTER}")] if base.endswith(f"/{POINTER}") else base
    candidate = f"{run}/{VERSIONS}/{version}{mark}{query}"
    try:
        return candidate if load(candidate).version == version else uri      # fetched already: from the cache
    except Exception:  # noqa: BLE001 - not there: the URI as given, which each replica checks against `version`
        return uri


def load_payload(payload: dict):
    """The replica's bundle from `bundle_payload`'s payload."""
    from jobs.bundle import load

    if "files" in payload:
        # Materialise the shipped files only long enough to load them: load() reads everything into memory.
        folder = Path(tempfile.mkdtemp(prefix="trainyard-bundle-"))
        try:
            for fname, data in payload["files"].items():     # a text bundle's tokenizer/ is a subfolder
                (folder / fname).parent.mkdir(parents=True, exist_ok=True)
                (folder / fname).write_bytes(data)
            return load(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    bundle = load(payload["path"])
    if payload.get("version") and bundle.version != payload["version"]:
        raise RuntimeError(f"{payload['path']} holds bundle version {bundle.version} now, not {payload['version']}, "
                           "which this app was deployed with (a newer one was published meanwhile): deploy again")
    return bundle
