"""The default image model keeps where things are (benchmarks/image_quality.py has the figures on real photos);
Ray-free, on tensors."""
import pytest
import torch

from jobs.model import CNN, build_model, model_config
from jobs.spec import ModelSpec


def _left_or_right(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32x32 images holding one bright 4x4 square, at x=8 (class 0) or x=20 (class 1), at a random height.
    Both places lie 12 pixels apart (3 x the conv blocks' stride of 4) and away from the padded border, so the
    two classes have exactly the same feature maps up to a shift: what they hold is the same, only where differs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 32, 32, generator=g) * 0.1
    rows = torch.randint(8, 20, (n,), generator=g)
    for i in range(n):
        left = 8 if y[i] == 0 else 20
        x[i, 0, rows[i]:rows[i] + 4, left:left + 4] = 1.0
    return x.reshape(n, -1), y


def _accuracy_after_training(spec: ModelSpec) -> float:
    torch.manual_seed(0)
    model = build_model(model_config(spec, 32 * 32, 2, [1, 32, 32]))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = _left_or_right(384, seed=1)
    for _ in range(4):
        for i in range(0, len(x), 64):
            loss = torch.nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    xt, yt = _left_or_right(256, seed=2)
    model.eval()
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).float().mean())


@pytest.mark.slow
def test_the_default_cnn_tells_where_a_part_is():
    """Global average pooling (the old default) cannot tell the classes apart; the default pooled grid can."""
    assert _accuracy_after_training(ModelSpec(kind="cnn")) >= 0.95
    assert _accuracy_after_training(ModelSpec(kind="cnn", pool=1)) <= 0.65


def test_bundles_written_before_pool_keep_global_average_pooling():
    """A model.json without `pool` (written before it existed) builds the network it was trained as."""
    old = {"kind": "cnn", "input_dim": 256, "output_dim": 3, "hidden": [16], "dropout": 0.0, "activation": "relu",
           "input_shape": [1, 16, 16], "channels": [8, 12]}
    model = build_model(old)
    assert isinstance(model, CNN) and model.head.net[0].in_features == 12
    model.load_state_dict(CNN([1, 16, 16], 3, [8, 12], [16]).state_dict())
    new = build_model({**old, "pool": 4})
    assert new.head.net[0].in_features == 12 * 16
    assert new(torch.zeros(2, 256)).shape == (2, 3)
