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
                          "train": {"epochs": 2, "workers": 1, "use_gpu": "auto", "batch_size": 64}})
    path, metrics = run_train(spec, progress=lambda *_: None)
    bundle = B.load(path)
    assert bundle.lineage["train"]["use_gpu"] is True
    # The workers' forward passes really ran under bf16 autocast: the dtype the training step's output had,
    # as the run's last checkpoint recorded it (float32 on CPU, see test_train_e2e).
    state = last_state(Path(bundle.lineage["train"]["run_path"]))
    assert state.compute_dtype == "bfloat16"
    # The bundle's weights are float32 whatever the autocast: serving runs without it.
    assert all(v.dtype == torch.float32 for v in bundle.model.state_dict().values() if v.is_floating_point())
    assert metrics["test"]["accuracy"] > 0.5
