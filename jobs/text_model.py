"""The text model: a transformers encoder (pretrained or from scratch) over the token ids of a packed row,
pooled (mean over the tokens, or the first token's), beside the row's table features, into an MLP head.

Built from plain constructor args (`text_model_config`; the bundle's model.json, with the encoder's config in
encoder/config.json) with `AutoModel.from_config`: no network, no pickle, no code from the model's folder. In
training the weights come from the pretrained folder (`pretrained`); in a bundle from model.safetensors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

ENCODER_CONFIG = "encoder/config.json"


def encoder_from_config(config: dict, pretrained: Optional[str] = None) -> nn.Module:
    """The encoder a config dict describes; with `pretrained`, with that folder's weights."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.for_model(**config)
    if pretrained:
        from transformers.utils import logging as hf_logging

        # Its "Loading weights: 0%|..." bar is a worker's stderr forwarded to the user's terminal, a line per
        # refresh in a CI log; the run's own lines say what is happening.
        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            return AutoModel.from_pretrained(pretrained, config=cfg)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
    return AutoModel.from_config(cfg)


class TextModel(nn.Module):
    """Packed rows (B, tabular_dim + max_length) → logits. Each batch is cut to its longest row's tokens
    before the encoder (per-batch dynamic padding): rows are right-padded, so the columns after the longest
    non-pad length are padding in every row, and attention costs grow with the square of the length."""

    # Rows per forward pass when scoring whole splits (validation, a bundle's predict): a transformer's
    # activations grow with rows × tokens, unlike an MLP's.
    chunk_rows = 256

    def __init__(self, encoder_config: dict, output_dim: int, tabular_dim: int, max_length: int, pad_id: int,
                 head: Callable[[int], nn.Module], pooling: str = "mean", freeze_layers: int = 0,
                 pretrained: Optional[str] = None, gradient_checkpointing: bool = False):
        super().__init__()
        self.tabular_dim, self.max_length, self.pad_id, self.pooling = tabular_dim, max_length, pad_id, pooling
        self.encoder = encoder_from_config(encoder_config, pretrained)
        # The pooler (BERT's dense layer over [CLS]) is not used: unused parameters would stop DDP.
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None
        if freeze_layers:
            self._freeze(freeze_layers)
        if gradient_checkpointing:
            # transformers 5 renamed it activation checkpointing; the floor of the `text` extra (4.48) has the old name.
            enable = getattr(self.encoder, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.head = head(self.encoder.config.hidden_size + tabular_dim)

    def _freeze(self, n: int) -> None:
        """Freeze the embeddings and the first `n` transformer layers (the encoder's layer list: the ModuleList
        as long as config.num_hidden_layers)."""
        layers = next((m for m in self.encoder.modules() if isinstance(m, nn.ModuleList)
                       and len(m) == self.encoder.config.num_hidden_layers), None)
        frozen = [self.encoder.get_input_embeddings()] + (list(layers[:n]) if layers is not None else [])
        embeddings = getattr(self.encoder, "embeddings", None)
        if embeddings is not None:
            frozen.append(embeddings)
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tab = x[:, :self.tabular_dim]
        ids = x[:, self.tabular_dim:].long()
        mask = ids != self.pad_id
        longest = max(int(mask.sum(dim=1).max()), 1) if len(ids) else 1
        ids, mask = ids[:, :longest], mask[:, :longest]
        hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(torch.cat([pooled, tab.to(pooled.dtype)], dim=1))


def text_model_config(model_spec, pre, source: dict, *, gradient_checkpointing: bool = False) -> dict:
    """Constructor args of the text model a spec describes (what the workers build; the bundle keeps them less
    `pretrained`, with the encoder's config in its own file: `to_bundle`). `pre`: the fitted TextPreprocessor;
    `source`: `jobs.text.Encoder.model_source` (the encoder's config and pretrained folder)."""
    return {"kind": "text", "encoder_config": source["config"], "pretrained": source["pretrained"],
            "output_dim": pre.output_dim, "tabular_dim": pre.tabular_dim, "max_length": pre.max_length,
            "pad_id": pre.pad_id, "pooling": model_spec.pooling, "freeze_layers": model_spec.freeze_layers,
            "hidden": list(model_spec.hidden), "dropout": model_spec.dropout, "activation": model_spec.activation,
            "gradient_checkpointing": gradient_checkpointing}


def to_bundle(config: dict, folder: Path) -> dict:
    """model.json's form of a model config: an encoder's config dict goes to encoder/config.json, named in its
    place; `pretrained` goes (the bundle's model.safetensors holds every weight) and so does
    gradient_checkpointing (a training setting). Other kinds are returned as they are."""
    if not isinstance(config.get("encoder_config"), dict):
        return config
    path = Path(folder) / ENCODER_CONFIG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config["encoder_config"], indent=2))
    drop = ("pretrained", "gradient_checkpointing", "encoder_config")
    return {**{k: v for k, v in config.items() if k not in drop}, "encoder_config": ENCODER_CONFIG}


def from_bundle(config: dict, folder: Path) -> dict:
    """The model config `to_bundle` stored, with the encoder's config read back from its file."""
    if not isinstance(config.get("encoder_config"), str):
        return config
    return {**config, "encoder_config": json.loads((Path(folder) / config["encoder_config"]).read_text())}
