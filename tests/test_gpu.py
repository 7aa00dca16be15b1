"""GPU path: runs only where CUDA is available (`pytest -m gpu`); skipped elsewhere."""
from pathlib import Path

import pytest
import torch

from jobs import bundle as B
from jobs.pipeline import run_train
from jobs.spec import validate_spec
from jobs.train import last_state

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("ray_session"),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_use_gpu_auto_trains_on_gpu_with_bf16(tmp_path, telemetry_dir, ray_session):
    if ray_session.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the session Ray sees no GPU")
    spec = validate_spec({"name": "gpu", "output": str(tmp_path / "out"),
                          "data": {"path": str(telemetry_dir), "label": "failure",
                                   "features": {"exclude": ["machine_id"]}},
                          "model": {"hidden": [32]},
                          "train": {"epochs": 2, "workers": 1, "use_gpu": "auto", "batch_size": 64,
                                    "max_failures": 0}})
    path, metrics = run_train(spec, progress=lambda *_: None)
    bundle = B.load(path)
    assert bundle.lineage["train"]["use_gpu"] is True
    # The workers' forward passes really ran under bf16 autocast: the dtype the training step's output had,
    # as the run's last checkpoint recorded it (float32 on CPU, see test_train_e2e).
    state = last_state(Path(bundle.lineage["train"]["run_path"]))
    assert state.compute_dtype == "bfloat16"
    assert all(row["gpu_peak_mib"] > 0 for row in state.history)    # each epoch reports the GPU memory it held
    # The bundle's weights are float32 whatever the autocast: serving runs without it.
    assert all(v.dtype == torch.float32 for v in bundle.model.state_dict().values() if v.is_floating_point())
    assert metrics["test"]["accuracy"] > 0.5


def test_a_text_encoder_fine_tunes_on_gpu_with_bf16_and_gradient_checkpointing(tmp_path, ray_session):
    """A tiny BERT (tests/test_text.py) fine-tuned on the GPU with gradient checkpointing under bf16 autocast, no
    failure retried; its bundle predicts raw text on the CPU."""
    from telemetry import write_shards
    from tests.test_text import make_tiny_encoder, work_orders
    from tests.test_text_e2e import text_spec

    if ray_session.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the session Ray sees no GPU")
    data = tmp_path / "orders"
    write_shards(work_orders(140, seed=3), data, 2)
    encoder = make_tiny_encoder(tmp_path / "tiny-bert", work_orders(300)["description"].tolist())
    spec = validate_spec(text_spec("gpu-text", data, tmp_path / "out", encoder, use_gpu=True,
                                   gradient_checkpointing=True,
                                   features={"text": ["description"],
                                             "exclude": ["work_order_id", "machine_type", "machine_hours"]}))
    path, _ = run_train(spec, progress=lambda *_: None)
    bundle = B.load(path)
    assert bundle.lineage["train"]["use_gpu"] is True
    state = last_state(Path(bundle.lineage["train"]["run_path"]))
    assert state.compute_dtype == "bfloat16" and len(state.history) == 2 and state.resumes == 0
    assert all(row["gpu_peak_mib"] > 0 for row in state.history)
    assert all(v.dtype == torch.float32 for v in bundle.model.state_dict().values() if v.is_floating_point())
    out = bundle.predict([{"description": "grinding noise from the gearbox"}])
    assert out["predictions"][0] in bundle.preprocessor.classes
