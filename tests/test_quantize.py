"""`serve.quantize: int8`: dynamic int8 quantization of a bundle's linear layers when a replica loads it.

Ray-free: the quantized MLP keeps its outputs close and its layers are int8; the setting is validated. Over real
HTTP: a tabular bundle served quantized answers, says so on /readyz, and predicts as the float bundle does.
"""
import json

import pytest
import torch

from jobs.quantize import quantize, quantized_layers


def test_int8_quantizes_every_linear_layer_and_keeps_outputs_close():
    from jobs.model import build_model

    torch.manual_seed(0)
    model = build_model({"kind": "mlp", "input_dim": 12, "output_dim": 3, "hidden": [32, 16]}).eval()
    x = torch.randn(64, 12)
    with torch.inference_mode():
        expected = torch.softmax(model(x), dim=1)
    linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert linear == 3 and quantized_layers(model) == 0
    q = quantize(model, "int8")
    assert quantized_layers(q) == linear and not any(type(m) is torch.nn.Linear for m in q.modules())
    with torch.inference_mode():
        got = torch.softmax(q(x), dim=1)
    assert (got - expected).abs().max() < 0.02
    assert quantize(model, None) is model


def test_quantize_is_an_operator_setting_and_unknown_modes_are_refused(tmp_path):
    """`trainyard serve BUNDLE --set quantize=int8` (or serve.quantize in --spec); never from a bundle."""
    from jobs.spec import ServeSpec, SpecError
    from serving.commands import serve_settings

    assert ServeSpec().quantize is None
    assert serve_settings(tmp_path, None, ["serve.quantize=int8"]).quantize == "int8"
    with pytest.raises(SpecError, match="serve.quantize"):
        serve_settings(tmp_path, None, ["quantize=int4"])
    with pytest.raises(ValueError, match="supported: int8"):
        quantize(torch.nn.Linear(2, 2), "int4")
    assert "quantize" not in ServeSpec.FROM_BUNDLE


@pytest.mark.ray
@pytest.mark.slow
def test_quantized_tabular_bundle_answers_over_http(served_bundle, serve_instance, telemetry_dir):
    from jobs.bundle import load
    from tests.serving_fixtures import call, deploy_app, records_from, release_app

    bundle = load(served_bundle)
    records = records_from(telemetry_dir, 60)
    expected = bundle.predict(records)
    served = deploy_app(served_bundle, "quantized", serve_instance, quantize="int8")
    try:
        status, _, ready = call(served.url, "GET", "/readyz")
        assert status == 200 and ready["quantize"] == "int8", ready
        status, _, out = call(served.url, "POST", "/predict", json.dumps({"records": records}).encode(),
                              {"Content-Type": "application/json"})
        assert status == 200, out
        diffs = [abs(a - b) for pa, pb in zip(out["probabilities"], expected["probabilities"]) for a, b in zip(pa, pb)]
        assert max(diffs) < 0.05, max(diffs)
        assert max(diffs) > 0          # the replica's model is not the float one
        agree = sum(a == b for a, b in zip(out["predictions"], expected["predictions"])) / len(records)
        assert agree >= 0.95, agree
        assert call(served.url, "GET", "/schema")[2]["limits"]["quantize"] == "int8"
    finally:
        release_app("quantized")


from tests.serving_fixtures import served_bundle, serve_instance  # noqa: E402,F401  (fixtures)
