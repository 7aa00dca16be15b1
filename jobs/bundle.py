"""The model bundle: the contract between training and serving. One folder, readable without Ray or pickle.

    model.safetensors   weights            model.json       the model's constructor args
    preprocessor.json   fitted statistics  schema.json      input features, label, classes, task
    metrics.json        {"val", "test"}    spec.yaml        the resolved spec     lineage.json
    profile.json        the reference distribution of the train split and of validation predictions (drift;
                        `jobs.profile`); bundles written before it have none (`Bundle.profile` is None)
    tokenizer/          text bundles: the tokenizer's files (transformers' save_pretrained)
    encoder/config.json text bundles: the encoder's config (its weights are in model.safetensors with the head's)

`load(path).predict(records)` applies the same `Preprocessor.transform` that produced the training data, so
training-time and serving-time preprocessing cannot drift apart.

Every bundle written is kept, in a folder of its own, and `OUTPUT/bundle` names the latest:

    OUTPUT/bundles/<version>/   one per export, never changed once published (`manifest.json` marks it complete)
    OUTPUT/bundle               a symbolic link to bundles/<version>, swapped in one rename (`os.replace`)
    OUTPUT/bundles/LATEST       on object storage (no links there): the latest version's name, one object

A bundle is written once, complete and atomically (`write`): into a hidden staging folder under bundles/, scored
there through its own load/predict path, given `metrics.json` and then `manifest.json` (every file's size and
SHA-256: the mark that trainyard wrote it, against which `load` checks every file), renamed to bundles/<version>,
and only then does `OUTPUT/bundle` point to it. On object storage (`upload`) the version's files go up first,
manifest last, and `LATEST` changes only once every file is there: an interrupted upload leaves the previous
latest as it was. trainyard removes nothing it did not mark as its own: a folder at `OUTPUT/bundle` without its
mark is refused, never replaced.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from safetensors.torch import save_file

from jobs import text_model
from jobs.drift import with_reference_sizes
from jobs.fitted import FittedPreprocessor
from jobs.loaded import Bundle, BundleError  # noqa: F401 (here, as ever: `jobs.bundle.Bundle`)
from jobs.manifest import NAME as MANIFEST, problems as manifest_problems, write as write_manifest
from jobs.model import load_model
from jobs.preprocess import load_state
from jobs.schema import input_schema
from jobs.spec import run_folder_hint, spec_file_hint

FILES = ("model.safetensors", "model.json", "preprocessor.json", "schema.json", "metrics.json", "spec.yaml",
         "lineage.json")
PROFILE = "profile.json"        # the reference profile (not in FILES: bundles written before it load without one)
POINTER = "bundle"              # OUTPUT/bundle: the latest bundle (a link to bundles/<version>)
VERSIONS = "bundles"            # OUTPUT/bundles/<version>/: every bundle written
LATEST = "LATEST"               # OUTPUT/bundles/LATEST on object storage: the latest version's name
PARTIAL_MARK = ".trainyard-partial"   # the first file of a staging folder: only folders holding it are cleared
WITH_MANIFEST = "manifest"       # lineage.json: true in a bundle written with manifest.json
STALE_PARTIAL_S = 3600


def write(path: str | os.PathLike, *, state_dict: dict, model_config: dict, preprocessor: FittedPreprocessor,
          metrics: dict, spec_yaml: str, lineage: dict, dtypes: Optional[dict[str, str]] = None,
          score: Optional[Callable[["Bundle"], dict]] = None, decide: Optional[Callable[["Bundle"], dict]] = None,
          profile: Optional[Callable[["Bundle"], dict]] = None,
          progress: Callable[[str], None] = lambda _line: None,
          taken: Optional[Callable[[str], bool]] = None) -> Path:
    """Write a new bundle version beside `path` (OUTPUT/bundle) and point `path` to it; returns the version's
    folder, OUTPUT/bundles/<version> (`lineage["version"]`, with a -2, -3... suffix if that name is taken
    there, or `taken(name)` says so: where the version goes next, e.g. `remote_names(output)`).

    Every file goes into a hidden staging folder under OUTPUT/bundles first. `score`, if given, is called with
    the bundle loaded from that folder (its own load/predict path, as serving will use it) and returns more
    metrics (the test split's: {"test": {...}}); `decide` first sets the staged preprocessor's decision (a binary
    cut-off, `jobs.decision`) and returns the metrics it changes. `metrics.json` is written last, then `manifest.
    json`; then the folder is renamed to its version and `path` pointed to it. If anything fails the staging
    folder is removed and `path` is as it was. Earlier versions are kept.

    A folder or file at `path` that trainyard did not write stays as it is: the new version is published all
    the same, and BundleError says where it is. A bundle folder an earlier trainyard wrote at `path` (no link)
    moves to OUTPUT/bundles/<its version> first."""
    path = Path(path)
    # Said in the bundle itself, covered by the manifest: a bundle with this mark and no manifest.json is one
    # cut short or altered (bundles of a trainyard before manifests have neither, and load unchecked).
    lineage = {**lineage, WITH_MANIFEST: True}
    versions = path.parent / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(versions)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=versions))
    (staging / PARTIAL_MARK).write_text(f"a bundle being written by process {os.getpid()}\n")
    # mkdtemp makes the folder private (0700); a bundle is shared like any folder its user makes (the serving
    # user, a shared filesystem), so it gets the permissions the umask gives.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(staging / "model.safetensors"))
        (staging / "model.safetensors").chmod(0o666 & ~umask)      # safetensors writes it 0600, unreadable to others
        _dump(staging / "model.json", text_model.to_bundle(model_config, staging))
        preprocessor.save(staging / "preprocessor.json")
        preprocessor.save_files(staging)
        _dump(staging / "schema.json", input_schema(preprocessor, dtypes))
        (staging / "spec.yaml").write_text(spec_yaml)
        _dump(staging / "lineage.json", lineage)
        if score is not None or profile is not None or decide is not None:
            staged = _read(staging, metrics=metrics)
            if decide is not None and (changed := decide(staged)) is not None:
                metrics = {**metrics, **changed}
                staged.preprocessor.save(staging / "preprocessor.json")
                _dump(staging / "schema.json", input_schema(staged.preprocessor, dtypes))
            if profile is not None:
                _dump(staging / PROFILE, profile(staged))
            if score is not None:
                metrics = {**metrics, **score(staged)}
        _dump(staging / "metrics.json", metrics)
        version = _publish(staging, versions, lineage, taken)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)     # made by mkdtemp above: ours
        raise
    _point(path, version, progress)
    return version


def check_pointer(path: str | os.PathLike) -> bool:
    """Whether `write` may point `path` (OUTPUT/bundle) to a new version: False when nothing is there or
    trainyard's link is; True for a bundle folder an earlier trainyard wrote there (`write` moves it to
    bundles/, never removes it); BundleError for anything else, naming it and what to do."""
    path = Path(path)
    if path.is_symlink():
        target = os.path.normpath(os.path.join(path.parent, os.readlink(path)))
        if os.path.dirname(target) == os.path.normpath(path.parent / VERSIONS):
            return False
        raise BundleError(f"{path} is a link to {target}, which trainyard did not make (its links point into "
                          f"{path.parent / VERSIONS}); move or remove the link, or choose another output folder")
    if not path.exists():
        return False
    if path.is_dir() and _is_bundle(path):
        return True
    kind = "folder" if path.is_dir() else "file"
    raise BundleError(f"{path} is a {kind} trainyard did not write (a bundle has {MANIFEST} or every one of "
                      f"{', '.join(FILES)}); trainyard never replaces it: move or rename it, or choose another "
                      "output folder")


def _is_bundle(folder: Path) -> bool:
    """A complete bundle trainyard wrote: its manifest, or (bundles written before manifests) every file."""
    return (folder / MANIFEST).is_file() or all((folder / f).is_file() for f in FILES)


def versions_of(output: str | os.PathLike) -> list[str]:
    """The bundle versions kept in a local output folder (OUTPUT/bundles/<version> with a manifest), oldest first."""
    folder = Path(output) / VERSIONS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()]
    return [p.name for p in sorted(found, key=lambda p: (p.stat().st_mtime, p.name))]


def _remove_stale_partials(versions: Path) -> None:
    """Staging folders a killed writer left (never a bundle: only a rename makes one), if they carry the mark
    `write` puts in each; only old ones: a writer still at work (scoring a large test split) keeps its folder."""
    for stale in versions.glob(".partial-*"):
        try:
            if (stale / PARTIAL_MARK).is_file() and time.time() - stale.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            continue


def _version_name(version: Any) -> str:
    """A folder name for a version: letters, digits, '.', '_' and '-', never hidden."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", str(version or "")).lstrip(".-") or "bundle"


def _free_name(versions: Path, base: str, taken: Optional[Callable[[str], bool]] = None) -> str:
    """`base`, or `base`-2, -3...: the first name in `versions` nothing has (and `taken` does not refuse)."""
    for n in itertools.count(1):
        name = base if n == 1 else f"{base}-{n}"
        if not (versions / name).exists() and not (versions / name).is_symlink() and not (taken and taken(name)):
            return name
    raise AssertionError("unreachable")


def _publish(staging: Path, versions: Path, lineage: dict, taken: Optional[Callable[[str], bool]]) -> Path:
    """Rename the finished staging folder to versions/<version>; the version a bundle carries in lineage.json
    is always its folder's name. A name another bundle took gets a suffix: nothing published is replaced."""
    base = _version_name(lineage.get("version"))
    while True:
        name = _free_name(versions, base, taken)
        target = versions / name
        if lineage.get("version") != name:
            lineage = {**lineage, "version": name}
            _dump(staging / "lineage.json", lineage)
        write_manifest(staging, name)
        (staging / PARTIAL_MARK).unlink()
        try:
            staging.rename(target)
            return target
        except OSError:
            if not target.exists():
                raise
            (staging / PARTIAL_MARK).write_text("")   # another writer took the name meanwhile: the next one


def _point(path: Path, version: Path, progress: Callable[[str], None]) -> None:
    """Point `path` (OUTPUT/bundle) to `version` in one rename of a new link over the old one: a reader sees the
    earlier bundle or the new one, never neither or a mix."""
    try:
        earlier = check_pointer(path)
    except BundleError as exc:
        raise BundleError(f"the bundle was written to {version}, but {path} was left as it is, so it does not "
                          f"point to it: {exc}. Serve {version} directly meanwhile") from None
    if earlier:
        moved = _publish_earlier(path, version.parent)
        progress(f"[bundle] {path} held a bundle written before versioned bundles: kept as {moved}")
    link = path.with_name(f".{path.name}.link-{uuid.uuid4().hex[:12]}")
    os.symlink(os.path.relpath(version, path.parent), link)
    try:
        os.replace(link, path)
    except BaseException:
        link.unlink()       # the link made just above
        raise


def _publish_earlier(path: Path, versions: Path) -> Path:
    """Move a bundle folder an earlier trainyard left at OUTPUT/bundle to versions/<its version> (a rename)."""
    try:
        version = json.loads((path / "lineage.json").read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        version = None
    target = versions / _free_name(versions, _version_name(version or "earlier"))
    path.rename(target)
    return target


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True))


def _json_default(o):
    if isinstance(o, (np.integer, np.floating, np.ndarray)):
        return o.tolist()       # a Python int or float for a NumPy scalar
    raise TypeError(f"cannot store {type(o).__name__} in a bundle")


def upload(version: Path, output: str) -> str:
    """Publish a bundle version written locally (`write`) to a run's output on a pyarrow URI (s3://, gs://...):
    its files go to OUTPUT/bundles/<version>/, `manifest.json` last; once every file is there with its size,
    OUTPUT/bundles/LATEST (one object, replaced whole) names the version. Nothing is deleted: an interrupted
    upload leaves LATEST, and so the latest bundle, as they were. Returns the version's URI."""
    import pyarrow.fs as pafs

    version = Path(version)
    manifest = json.loads((version / MANIFEST).read_text())
    fs, root = pafs.FileSystem.from_uri(output.rstrip("/"))
    uri = f"{output.rstrip('/')}/{VERSIONS}/{version.name}"
    dest = f"{root}/{VERSIONS}/{version.name}"
    if fs.get_file_info(dest).type != pafs.FileType.NotFound:
        raise BundleError(f"{uri} exists already (trainyard never writes over a bundle); export again")
    latest = f"{root}/{VERSIONS}/{LATEST}"
    _check_remote_pointer(fs, root, output)
    fs.create_dir(dest, recursive=True)
    local_fs = pafs.LocalFileSystem()
    for rel in sorted(manifest["files"], key=lambda name: name == "metrics.json") + [MANIFEST]:
        if "/" in rel:          # a file in a subfolder (a tokenizer's, say)
            fs.create_dir(f"{dest}/{rel.rsplit('/', 1)[0]}", recursive=True)
        pafs.copy_files(str(version / rel), f"{dest}/{rel}", source_filesystem=local_fs, destination_filesystem=fs)
    there = {i.path[len(dest) + 1:]: i.size for i in fs.get_file_info(pafs.FileSelector(dest, recursive=True))
             if i.type == pafs.FileType.File}
    wrong = [rel for rel, f in manifest["files"].items() if there.get(rel) != f["bytes"]]
    if wrong:
        raise BundleError(f"{uri}: {', '.join(wrong)} did not arrive whole; {output}/{VERSIONS}/{LATEST} still "
                          "names the previous bundle. Export again")
    with fs.open_output_stream(latest) as out:
        out.write(version.name.encode())
    return uri


def remote_names(output: str) -> Callable[[str], bool]:
    """For `write(taken=...)`: whether a run's output on a pyarrow URI has a bundle version of that name."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(output.rstrip("/"))
    return lambda name: fs.get_file_info(f"{root}/{VERSIONS}/{name}").type != pafs.FileType.NotFound


def _latest(fs, run: str) -> Optional[str]:
    """What OUTPUT/bundles/LATEST says on `fs` (None when there is no such object)."""
    import pyarrow.fs as pafs

    if fs.get_file_info(f"{run}/{VERSIONS}/{LATEST}").type != pafs.FileType.File:
        return None
    with fs.open_input_stream(f"{run}/{VERSIONS}/{LATEST}") as f:
        return f.read(256).decode(errors="replace").strip()


def _check_remote_pointer(fs, root: str, output: str) -> None:
    """OUTPUT/bundles/LATEST is replaced only if trainyard wrote it: it names a version that has a manifest."""
    import pyarrow.fs as pafs

    name = _latest(fs, root)
    if name is not None and (name != _version_name(name) or fs.get_file_info(
            f"{root}/{VERSIONS}/{name}/{MANIFEST}").type != pafs.FileType.File):
        raise BundleError(f"{output}/{VERSIONS}/{LATEST} was not written by trainyard (it does not name a bundle "
                          f"in {output}/{VERSIONS}); trainyard never replaces it: move it, or choose another output")


def _remote_bundle(fs, root: str, uri: str) -> str:
    """Where, on `fs`, the bundle `uri` names is: a bundle folder itself, or the latest of a run's output (given
    as the output or as OUTPUT/bundle), or a bundle folder an earlier trainyard uploaded to OUTPUT/bundle."""
    import pyarrow.fs as pafs

    def has_model(folder: str) -> bool:
        return fs.get_file_info(f"{folder}/model.json").type == pafs.FileType.File

    parent, _, name = root.rpartition("/")
    if name != POINTER and has_model(root):
        return root
    run = parent if name == POINTER else root
    version = _latest(fs, run)
    if version is not None:
        if version != _version_name(version):
            raise BundleError(f"{uri}: {VERSIONS}/{LATEST} holds {version!r}, not a bundle version")
        return f"{run}/{VERSIONS}/{version}"
    for folder in (root, f"{root}/{POINTER}"):
        if has_model(folder):
            return folder
    raise BundleError(f"no trainyard bundle at {uri}: give a bundle folder, or a run's output (it holds "
                      f"{VERSIONS}/{LATEST})")


def fetch(uri: str) -> Path:
    """A bundle (or a run output's latest) at a URI → a local copy under the temp dir. A version with a manifest
    that was fetched before is not downloaded again (a published version never changes)."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri.rstrip("/"))
    try:
        src = _remote_bundle(fs, root, uri)
        manifest = None
        if fs.get_file_info(f"{src}/{MANIFEST}").type == pafs.FileType.File:
            with fs.open_input_stream(f"{src}/{MANIFEST}") as f:
                manifest = f.read()
    except OSError as exc:
        raise BundleError(f"cannot read the bundle at {uri}: {exc}") from None
    cache = Path(tempfile.gettempdir()) / "trainyard-bundles"
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{fs.type_name}:{src}".encode()).hexdigest()[:16]
    local, source = cache / key, cache / f"{key}.source"   # `source`: written by fetch, marks `local` as its own

    def fetched() -> bool:
        return (manifest is not None and source.is_file() and (local / MANIFEST).is_file()
                and (local / MANIFEST).read_bytes() == manifest)

    if fetched():
        return local
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.partial-", dir=cache))
    try:
        pafs.copy_files(src, str(staging), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)     # made by mkdtemp above: ours
        raise BundleError(f"cannot download the bundle at {uri}: {exc}") from None
    if fetched():                   # another process fetched the same version meanwhile
        shutil.rmtree(staging, ignore_errors=True)
        return local
    if local.exists() or local.is_symlink():
        if not source.is_file():
            return staging          # a folder fetch did not make: left alone, this copy used instead
        old = Path(tempfile.mkdtemp(prefix=f".{key}.old-", dir=cache))
        local.rename(old / "bundle")
        shutil.rmtree(old, ignore_errors=True)
    source.write_text(uri + "\n")
    try:
        staging.rename(local)
    except OSError:                 # another fetch put its copy there first
        return staging
    return local


def resolve(path: str | os.PathLike) -> Path:
    """The bundle folder a path names: a bundle folder, or a run's output folder (its latest bundle), local or
    a URI (fetched to a local copy). OUTPUT/bundle, a link, resolves to the version it points to now, so that
    every file is read from that one version even if a new one is published meanwhile."""
    if "://" in str(path):
        return fetch(str(path))
    p = Path(path)
    if (p / POINTER / "model.json").is_file():
        p = p / POINTER
    return p.resolve() if p.is_symlink() else p


def load(path: str | os.PathLike) -> Bundle:
    p = resolve(path)
    if not p.is_dir():          # a run folder whose `bundle` link's version was deleted: said, with those left
        raise BundleError(run_folder_hint(Path(path).parent if Path(path).name == POINTER else Path(path)) or
                          f"{p}: {'not a folder' if p.exists() else 'no such folder'}. Give the bundle folder "
                          f"(OUTPUT/bundle) or the run's output folder{spec_file_hint(p)}")
    changed = manifest_problems(p)     # first: a folder with trainyard's mark is a bundle, damaged or not
    if changed is None and _written_with_manifest(p):
        raise BundleError(f"{p}: manifest.json is missing, and this bundle was written with one (its lineage.json "
                          "says so): a copy cut short (an upload's leftover) or a file removed. Copy it again from "
                          "where it came from, or export a new one with trainyard train/tune")
    if changed:
        raise BundleError(f"{p}: the bundle is not as it was written ({'; '.join(changed)}). A bundle is never "
                          "changed once published: copy it again from where it came from, or export a new one "
                          "with trainyard train/tune")
    missing = [f for f in FILES if not (p / f).is_file()]
    if missing:
        raise BundleError(run_folder_hint(p) or f"{p} is not a trainyard bundle: missing {', '.join(missing)}. "
                          "Give the bundle folder (OUTPUT/bundle) or the run's output folder")
    return _read(p)


def _written_with_manifest(p: Path) -> bool:
    try:
        return json.loads((p / "lineage.json").read_text()).get(WITH_MANIFEST) is True
    except (OSError, ValueError, AttributeError):
        return False          # no lineage, or not one to read: `_read` names it


def _read(p: Path, metrics: Optional[dict] = None) -> Bundle:
    """The bundle in folder `p`; `metrics`: what its metrics.json will hold (a bundle being written has none yet)."""
    def read_json(name: str):
        try:
            return json.loads((p / name).read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{p / name}: cannot read it ({type(exc).__name__}: {exc}); the bundle is damaged: "
                              "re-export it with trainyard train/tune") from None

    model_config_doc, preprocessor_doc = read_json("model.json"), read_json("preprocessor.json")
    schema, lineage = read_json("schema.json"), read_json("lineage.json")
    metrics = read_json("metrics.json") if metrics is None else metrics
    profile = with_reference_sizes(read_json(PROFILE)) if (p / PROFILE).is_file() else None
    try:
        model_config = text_model.from_bundle(model_config_doc, p)
        pre = load_state(preprocessor_doc, p)
        model = load_model(model_config, p / "model.safetensors")
    except Exception as exc:  # safetensors, torch and our own config errors alike: name the bundle
        raise BundleError(f"{p}: cannot load the bundle ({type(exc).__name__}: {exc}); "
                          "re-export it with trainyard train/tune") from None
    model.eval()
    return Bundle(p, model, model_config, pre, schema, metrics, lineage, profile)
