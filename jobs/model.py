"""Models, built from plain constructor args (stored as JSON in the bundle, never pickled)."""
from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Tabular MLP over the packed feature vector: [Linear → activation → dropout] × hidden, then a head."""

    def __init__(self, input_dim: int, output_dim: int, hidden: list[int], dropout: float = 0.0,
                 activation: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, output_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Image classifier over packed rows (B, C*H*W): [conv3x3 → BN → activation → maxpool] per entry of
    `channels`, the last feature map average-pooled to `pool`×`pool` cells and flattened, then an MLP head.

    The pooled grid keeps where things are (a sleeve, a bore, a scratch near the rim); `pool: 1` is global
    average pooling, which keeps only what is there: on 28×28 photos it fell below a linear model on the raw
    pixels (benchmarks/image_quality.py). Adaptive pooling keeps any input size working."""

    def __init__(self, input_shape: list[int], output_dim: int, channels: list[int], hidden: list[int],
                 dropout: float = 0.0, activation: str = "relu", pool: int = 1):
        super().__init__()
        self.input_shape = list(input_shape)
        blocks: list[nn.Module] = []
        c_in = input_shape[0]
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       _ACTIVATIONS[activation](), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c_out
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(pool), nn.Flatten())
        self.head = MLP(c_in * pool * pool, output_dim, hidden, dropout, activation)
        # Convolution weights in channels-last order make every feature map NHWC, which PyTorch's CPU (oneDNN)
        # and GPU convolutions run faster: with them the default model's training step is 1.42x the model before
        # the pooled grid (global pooling, NCHW) on 2 cores (benchmarks/image_throughput.py --pool-ab). The input needs no conversion (one channel, or a map the first convolution writes NHWC);
        # the bundle stores the weights contiguous (jobs.bundle.write) and load_state_dict keeps this order.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.view(-1, *self.input_shape)))


def model_config(model_spec, input_dim: int, output_dim: int, input_shape: list[int] | None = None) -> dict:
    """Constructor args of the model a spec describes; what `build_model` and the bundle consume."""
    cfg = {"kind": model_spec.kind, "input_dim": input_dim, "output_dim": output_dim,
           "hidden": list(model_spec.hidden), "dropout": model_spec.dropout, "activation": model_spec.activation}
    if model_spec.kind == "cnn":
        cfg.update(input_shape=list(input_shape), channels=list(model_spec.channels), pool=model_spec.pool)
    if model_spec.kind == "image":
        from jobs.vision import image_model_config   # transformers is imported only for a pretrained backbone
        return image_model_config(model_spec, output_dim, input_shape)
    return cfg


def build_model(config: dict) -> nn.Module:
    kind = config.get("kind", "mlp")
    if kind == "mlp":
        return MLP(config["input_dim"], config["output_dim"], config["hidden"], config.get("dropout", 0.0),
                   config.get("activation", "relu"))
    if kind == "cnn":
        # Bundles written before `pool` existed used global average pooling.
        return CNN(config["input_shape"], config["output_dim"], config["channels"], config["hidden"],
                   config.get("dropout", 0.0), config.get("activation", "relu"), config.get("pool", 1))
    if kind in ("text", "image"):
        # transformers is imported only by these models' builders
        if kind == "text":
            from jobs.text_model import TextModel as Model
        else:
            from jobs.vision import ImageModel as Model
        args = {k: v for k, v in config.items() if k not in ("kind", "hidden", "dropout", "activation")}
        return Model(head=lambda width: MLP(width, config["output_dim"], config["hidden"],
                                            config.get("dropout", 0.0), config.get("activation", "relu")),
                     **args)
    raise ValueError(f"unknown model kind {kind!r}; this trainyard knows: mlp, cnn, text, image")


def load_model(config: dict, weights) -> nn.Module:
    """The model `config` describes, with the weights of safetensors file `weights`. The shapes are compared first,
    the model built on the meta device (no memory) against the file's header: a model.json asking for two layers
    of 20,000 units (133 bytes) had 2 GB allocated before the weights showed they did not fit, on each try of
    each replica."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is built for real, and checked there
        shapes = None
    if shapes is not None:
        with safe_open(str(weights), "pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        differ = [k for k in sorted(set(shapes) | set(stored)) if shapes.get(k) != stored.get(k)]
        if differ:
            raise ValueError("model.json does not describe the weights in model.safetensors (" + "; ".join(
                f"{k}: model {shapes.get(k)}, weights {stored.get(k)}" for k in differ[:3])
                + (f"; {len(differ) - 3} more" if len(differ) > 3 else "") + ")")
    model = build_model(config)
    model.load_state_dict(load_file(str(weights)))
    return model
