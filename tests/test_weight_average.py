"""train.ema_epochs: the weight average itself (no Ray), and its spec field."""
import pytest
import torch
from torch import nn

from jobs.spec import SpecError, validate_spec
from jobs.worker import WeightAverage


def _ramp(average: WeightAverage, model: nn.Sequential, steps: int, span_steps: float) -> torch.Tensor:
    """Move the weight to 1, 2, ... `steps` (as an optimizer would, in place) and return what the recurrence gives."""
    expected = model[0].weight.detach().clone()
    for step in range(1, steps + 1):
        with torch.no_grad():
            model[0].weight.fill_(float(step))
            model[1].num_batches_tracked.fill_(step)
        decay = min((1 + step) / (10 + step), 1 - 1 / span_steps)
        expected = decay * expected + (1 - decay) * model[0].weight.detach()
        average.update()
    return expected


def test_average_follows_its_recurrence_and_copies_integer_buffers():
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    average = WeightAverage(model, epochs=0.5, steps_per_epoch=10)     # spans 5 steps once warmed up
    expected = _ramp(average, model, 60, span_steps=5)
    assert average.steps == 60
    assert torch.allclose(average.state["0.weight"], expected)
    # An average over ~5 steps of a weight rising by 1 per step trails it by decay / (1 - decay) = 4 steps.
    assert float(average.state["0.weight"][0, 0]) == pytest.approx(56, abs=0.1)
    assert int(average.state["1.num_batches_tracked"]) == 60          # copied, not averaged
    assert float(model[0].weight.detach()[0, 0]) == 60.0                      # the live model is never touched


def test_long_span_is_limited_by_the_warm_up():
    # Over the first steps the span is about a ninth of the steps so far, whatever ema_epochs asks for.
    model = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    average = WeightAverage(model, epochs=1, steps_per_epoch=1000)
    expected = _ramp(average, model, 60, span_steps=1000)
    assert torch.allclose(average.state["0.weight"], expected)
    assert 52 < float(average.state["0.weight"][0, 0]) < 55


def test_snapshot_restores_the_same_average():
    model = nn.Linear(3, 2)
    first = WeightAverage(model, epochs=1, steps_per_epoch=5)
    for _ in range(7):
        with torch.no_grad():
            model.weight.add_(1.0)
        first.update()
    second = WeightAverage(nn.Linear(3, 2), epochs=1)
    second.restore(first.snapshot())
    assert second.steps == 7 and second.steps_per_epoch == 5
    assert all(torch.equal(second.state[k], first.state[k]) for k in first.state)


def test_ema_epochs_field():
    base = {"name": "x", "data": {"path": "d", "label": "y"}}
    assert validate_spec(base).train.ema_epochs is None
    assert validate_spec({**base, "train": {"ema_epochs": 1}}).train.ema_epochs == 1
    with pytest.raises(SpecError) as err:
        validate_spec({**base, "train": {"ema_epochs": 0}})
    assert "train.ema_epochs" in str(err.value) and "greater than 0" in str(err.value)
