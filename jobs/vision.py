"""Pretrained vision backbones (`model.kind: image`, `model.encoder`): a Hugging Face ViT, ConvNeXt, ResNet...
fine-tuned with an MLP head on the image pipeline of `jobs.images`.

- `resolve_backbone(model_spec)` runs on the driver before any image is read: the folder (`jobs.hf`), the
  model's config, and its image processor's resize and normalisation (`AutoImageProcessor`).
- The fitted `ImagePreprocessor` then resizes every image to the processor's size and normalises it with the
  processor's mean and std instead of the train split's, so preprocessor.json carries the backbone's own
  preprocessing to evaluation and serving (one code path, no transformers at decode time).
- `ImageModel` builds the backbone with `AutoModel.from_config` (no network, no pickle, no code from the model's
  folder): in training with the pretrained folder's weights, in a bundle with model.safetensors'. Its config
  goes to the bundle's encoder/config.json (`jobs.text_model.to_bundle`, shared with text encoders).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from cluster.errors import BadInput
from jobs.hf import check_freeze, resolve_pretrained
from jobs.text_model import encoder_from_config

FIELD = "model.encoder"


@dataclass(frozen=True)
class Backbone:
    """A pretrained vision model as the driver resolved it: what the preprocessor and the workers need."""

    folder: str
    config: dict                 # the model's config (config.json as a dict)
    size: list[int]              # [height, width] the image processor resizes (and crops) to
    channels: int
    mean: list[float]            # per channel, for pixels in [0, 1] (the processor's rescale folded in)
    std: list[float]


def resolve_backbone(model_spec) -> Backbone:
    """The backbone `model_spec.encoder` names, found offline; BadInput names the field and the fix when it is
    not a vision model or has no image processor config."""
    from transformers import AutoConfig, AutoImageProcessor

    folder = resolve_pretrained(model_spec.encoder, field=FIELD, vision=True)
    shown = model_spec.encoder
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"{FIELD}: cannot read the model config in {folder} ({type(exc).__name__}: {exc}); point "
                       f"{FIELD} at a folder save_pretrained wrote") from None
    channels = getattr(config, "num_channels", None)
    if not isinstance(channels, int):
        raise BadInput(f"{FIELD}: {shown!r} is a {config.model_type} model, not a vision model (its config has no "
                       f"num_channels). Point {FIELD} at a vision model (ViT, ConvNeXt, ResNet...), or use "
                       "model.kind: text for a text encoder")
    if channels not in (1, 3):
        raise BadInput(f"{FIELD}: {shown!r} takes {channels}-channel images; trainyard decodes images to 1 "
                       "(greyscale) or 3 (RGB) channels")
    check_freeze(config, model_spec.freeze_layers, shown)
    try:
        processor = AutoImageProcessor.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"{FIELD}: {shown!r} has no usable image processor config (preprocessor_config.json: "
                       f"{type(exc).__name__}: {exc}). Save the model's image processor beside it "
                       "(AutoImageProcessor.from_pretrained(id).save_pretrained(folder))") from None
    size = processor_size(processor)
    if size is None:
        raise BadInput(f"{FIELD}: {shown!r}: its image processor states no size to resize to (size: "
                       f"{dict(processor.size or {})}); add height and width to its preprocessor_config.json")
    mean, std = processor_norms(processor, channels)
    return Backbone(folder=str(folder), config=config.to_dict(), size=size, channels=channels, mean=mean, std=std)


def processor_size(processor) -> Optional[list[int]]:
    """[height, width] of what the processor hands the model: its crop when it crops, else its resize target
    (a square for a `shortest_edge` size). trainyard resizes straight to it (bilinear)."""
    crop = getattr(processor, "crop_size", None)
    if getattr(processor, "do_center_crop", False) and crop and crop.get("height") and crop.get("width"):
        return [int(crop["height"]), int(crop["width"])]
    size = processor.size or {}
    if size.get("height") and size.get("width"):
        return [int(size["height"]), int(size["width"])]
    if size.get("shortest_edge"):
        return [int(size["shortest_edge"])] * 2
    return None


def processor_norms(processor, channels: int) -> tuple[list[float], list[float]]:
    """The processor's normalisation as a mean and std for pixels in [0, 1], which is what `ImagePreprocessor`
    normalises: a processor computes (pixel * rescale_factor - mean) / std, the same as
    (pixel / 255 - mean / k) / (std / k) with k = 255 * rescale_factor."""
    k = 255.0 * (float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0)
    if not getattr(processor, "do_normalize", True):
        return [0.0] * channels, [1.0 / k] * channels
    mean, std = _per_channel(processor.image_mean, channels), _per_channel(processor.image_std, channels)
    return [m / k for m in mean], [s / k for s in std]


def _per_channel(values, channels: int) -> list[float]:
    values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    return values * channels if len(values) == 1 else values[:channels]


def image_model_config(model_spec, output_dim: int, input_shape: list[int]) -> dict:
    """Constructor args of `ImageModel` (what the workers build; the bundle keeps them less `pretrained`, the
    config going to encoder/config.json: `jobs.text_model.to_bundle`)."""
    backbone = resolve_backbone(model_spec)
    return {"kind": "image", "encoder_config": backbone.config, "pretrained": backbone.folder,
            "input_shape": list(input_shape), "output_dim": output_dim, "pooling": model_spec.pooling,
            "freeze_layers": model_spec.freeze_layers, "hidden": list(model_spec.hidden),
            "dropout": model_spec.dropout, "activation": model_spec.activation}


class ImageModel(nn.Module):
    """Packed image rows (B, C*H*W) → backbone → one vector per image → MLP head.

    The vector: a convolutional backbone's own pooled output (ResNet's average pool, ConvNeXt's pool and
    LayerNorm), else the spatial mean of its last feature map; a transformer's tokens averaged (`pooling:
    mean`) or its first token (`cls`, ViT's [CLS])."""

    # Rows per forward pass when scoring whole splits (validation, a bundle's predict): a backbone's
    # activations per image are large.
    chunk_rows = 256

    def __init__(self, encoder_config: dict, input_shape: list[int], output_dim: int,
                 head: Callable[[int], nn.Module], pooling: str = "mean", freeze_layers: int = 0,
                 pretrained: Optional[str] = None):
        super().__init__()
        self.input_shape, self.pooling = list(input_shape), pooling
        self.encoder = encoder_from_config(encoder_config, pretrained)
        with torch.no_grad():      # one blank image tells the output's layout and width, whatever the family
            self.encoder.eval()
            probe = self.encoder(pixel_values=torch.zeros(1, *self.input_shape))
            self.encoder.train()
        self.spatial = probe.last_hidden_state.dim() == 4
        if not self.spatial and getattr(self.encoder, "pooler", None) is not None:
            # ViT's pooler (a dense layer over [CLS]) is not used: unused parameters would stop DDP.
            self.encoder.pooler = None
        if freeze_layers:
            self._freeze(freeze_layers)
        self.head = head(self._pool(probe).shape[1])

    def _freeze(self, n: int) -> None:
        """Freeze the embeddings (the patch or stem layers) and the first `n` blocks: a transformer's layers
        (the ModuleList as long as config.num_hidden_layers), a convolutional backbone's stages."""
        cfg = self.encoder.config
        blocks = next((m for m in self.encoder.modules() if isinstance(m, nn.ModuleList)
                       and len(m) == getattr(cfg, "num_hidden_layers", -1)), None)
        if blocks is None:
            blocks = getattr(getattr(self.encoder, "encoder", None), "stages", None)
        if blocks is None or n > len(blocks):
            raise BadInput(f"model.freeze_layers: {n} is more than the {len(blocks) if blocks is not None else 0} "
                           f"blocks this {cfg.model_type} backbone has; lower it")
        stem = [getattr(self.encoder, name) for name in ("embeddings", "embedder")
                if getattr(self.encoder, name, None) is not None]
        for module in stem + list(blocks[:n]):
            for p in module.parameters():
                p.requires_grad_(False)

    def _pool(self, out) -> torch.Tensor:
        hidden = out.last_hidden_state
        if self.spatial:
            pooled = out.pooler_output if out.pooler_output is not None else hidden.mean(dim=(2, 3))
            return pooled.flatten(1)
        return hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._pool(self.encoder(pixel_values=x.view(-1, *self.input_shape))))
