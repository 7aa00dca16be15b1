"""Pretrained vision backbones (model.kind: image): tiny ViT / ResNet / ConvNeXt models configured and saved
locally with save_pretrained (as a downloaded model's folder is), their image processors beside them."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cluster.errors import BadInput
from jobs import text_model
from jobs.images import ImagePreprocessor
from jobs.model import build_model, model_config
from jobs.spec import ModelSpec, SpecError, validate_spec
from jobs.vision import ImageModel, resolve_backbone

VIT = dict(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
           intermediate_size=64)


def save_vit(folder, processor: bool = True):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(**VIT)).save_pretrained(folder)
    if processor:
        ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.5, 0.4, 0.3],
                          image_std=[0.2, 0.25, 0.3]).save_pretrained(folder)
    return folder


def save_resnet(folder):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetModel

    ResNetModel(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                             layer_type="basic")).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 24}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    return save_vit(tmp_path_factory.mktemp("vit"))


def test_the_backbone_brings_its_processors_resize_and_normalisation(vit):
    """The preprocessor built from the backbone normalises exactly as the model's own image processor does."""
    from transformers import AutoImageProcessor

    backbone = resolve_backbone(ModelSpec(kind="image", encoder=str(vit)))
    assert backbone.size == [16, 16] and backbone.channels == 3 and backbone.config["model_type"] == "vit"
    pre = ImagePreprocessor(label="y", classes=["a", "b"], size=backbone.size, channels=3, mean=backbone.mean,
                            std=backbone.std)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    theirs = AutoImageProcessor.from_pretrained(str(vit))(list(pixels), return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(pre.normalise(pixels), theirs.reshape(2, -1), atol=1e-5)


def test_freezing_more_layers_than_a_vit_has_is_refused_when_it_is_resolved(vit):
    layers = json.loads((vit / "config.json").read_text())["num_hidden_layers"]
    with pytest.raises(BadInput, match=f"model.freeze_layers: {layers + 1} is more than the {layers} layers of .* "
                                       f"\\(a vit model\\); set it to {layers} or less"):
        resolve_backbone(ModelSpec(kind="image", encoder=str(vit), freeze_layers=layers + 1))
    assert resolve_backbone(ModelSpec(kind="image", encoder=str(vit), freeze_layers=layers)).size == [16, 16]


def test_not_a_vision_model_and_no_processor_are_named(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert")
    with pytest.raises(BadInput, match=r"model.encoder: .*bert.* is a bert model, not a vision model"):
        resolve_backbone(ModelSpec(kind="image", encoder=str(tmp_path / "bert")))
    save_vit(tmp_path / "bare", processor=False)
    with pytest.raises(BadInput, match=r"model.encoder: .* has no usable image processor config"):
        resolve_backbone(ModelSpec(kind="image", encoder=str(tmp_path / "bare")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BadInput, match=r"model.encoder: 'google/vit-base-patch16-224' is not a local folder and not "
                                       r"in the local Hugging Face cache.*\(config.json, weights and its "
                                       r"preprocessor_config.json\)"):
        resolve_backbone(ModelSpec(kind="image", encoder="google/vit-base-patch16-224"))
    # A vision folder without weights is told to use kind: cnn, not a text encoder's `scratch`.
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text((tmp_path / "bare" / "config.json").read_text())
    with pytest.raises(BadInput, match=r"holds config.json but no weights .* or use model.kind: cnn to train an "
                                       r"image model from scratch"):
        resolve_backbone(ModelSpec(kind="image", encoder=str(tmp_path / "config-only")))


def test_spec_kinds_and_encoder():
    with pytest.raises(SpecError, match="encoder: scratch trains a text encoder \\(kind: text\\); to train an image "
                                        "model from nothing use kind: cnn"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y", "format": "images"},
                       "model": {"kind": "image", "encoder": "scratch"}})
    with pytest.raises(SpecError, match="kind image fine-tunes a pretrained vision backbone"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y", "format": "images"},
                       "model": {"kind": "image"}})
    with pytest.raises(SpecError, match="for a pretrained backbone in model.encoder use kind: image"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y", "format": "images"},
                       "model": {"kind": "cnn", "encoder": "some/model"}})
    with pytest.raises(SpecError, match="model.kind image needs image data"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "model": {"kind": "image", "encoder": "m"}})


@pytest.mark.parametrize("family", ["resnet", "convnext"])
def test_convolutional_backbones_pool_their_own_way_and_round_trip(tmp_path, family):
    """ResNet/ConvNeXt: their pooled output feeds the head; the bundle's form (config in encoder/config.json, no
    pretrained folder) rebuilds the same network, which takes the trained weights."""
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    if family == "resnet":
        folder = save_resnet(tmp_path / "resnet")
    else:
        folder = tmp_path / "convnext"
        ConvNextModel(ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(folder)
        ConvNextImageProcessor(size={"shortest_edge": 24}).save_pretrained(folder)
    spec = ModelSpec(kind="image", encoder=str(folder), hidden=[8], freeze_layers=1)
    backbone = resolve_backbone(spec)
    assert backbone.size == [24, 24]
    # More blocks frozen than the backbone has: refused when the backbone is resolved (validate, or before Ray),
    # not in each worker after the data is read (three identical tracebacks, exit 1 after 44 s).
    stages = len(json.loads((folder / "config.json").read_text())["depths"])
    with pytest.raises(BadInput, match=f"model.freeze_layers: {stages + 1} is more than the {stages} stages of "):
        resolve_backbone(spec.model_copy(update={"freeze_layers": stages + 1}))
    cfg = model_config(spec, 3 * 24 * 24, 4, [3, *backbone.size])
    model = build_model(cfg)
    assert isinstance(model, ImageModel) and model.spatial and model.head.net[0].in_features == 16
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("encoder.") for n in frozen) and len(frozen) < len(dict(model.named_parameters()))
    x = torch.randn(3, 3 * 24 * 24)
    stored = text_model.to_bundle(cfg, tmp_path / "bundle")
    assert "pretrained" not in stored and (tmp_path / "bundle" / "encoder" / "config.json").is_file()
    shutil.rmtree(folder)          # the bundle needs nothing from the pretrained folder
    again = build_model(text_model.from_bundle(json.loads(json.dumps(stored)), tmp_path / "bundle"))
    again.load_state_dict(model.state_dict())
    model.eval(), again.eval()
    torch.testing.assert_close(again(x), model(x))


def test_training_starts_from_the_pretrained_weights(vit):
    """Workers build the model with the pretrained folder's weights (the bundle from model.safetensors')."""
    cfg = model_config(ModelSpec(kind="image", encoder=str(vit), hidden=[8]), 3 * 16 * 16, 2, [3, 16, 16])
    trained = build_model(cfg).state_dict()
    saved = load_file(str(vit / "model.safetensors"))
    torch.testing.assert_close(trained["encoder.embeddings.patch_embeddings.projection.weight"],
                               saved["embeddings.patch_embeddings.projection.weight"])
    assert not any(k.startswith("encoder.pooler") for k in trained)     # ViT's unused pooler is dropped
    fresh = build_model({**cfg, "pretrained": None}).state_dict()
    assert not torch.equal(fresh["encoder.embeddings.patch_embeddings.projection.weight"],
                           trained["encoder.embeddings.patch_embeddings.projection.weight"])


@pytest.mark.ray
@pytest.mark.slow
def test_image_job_on_a_pretrained_vit_to_bundle_offline(vit, tmp_path, ray_session, monkeypatch):
    """defect images → kind: image on the tiny ViT (frozen stem and first layer) → bundle that holds the
    backbone's config, resize and normalisation; loaded offline with the pretrained folder gone, it reproduces
    metrics.json; the frozen weights are the pretrained ones."""
    import pandas as pd
    from defects import generate

    from jobs import bundle as B
    from jobs.evaluate import score
    from jobs.pipeline import prepare, run_train

    parts = generate(tmp_path / "parts", per_class=20, size=20, seed=2)
    backbone = tmp_path / "backbone"
    shutil.copytree(vit, backbone)
    spec = validate_spec({
        "name": "parts-vit", "output": str(tmp_path / "out"),
        "data": {"path": str(parts), "format": "images", "label": "label", "split": {"val": 0.2, "test": 0.2},
                 "augment": {"hflip": True}},
        "model": {"kind": "image", "encoder": str(backbone), "freeze_layers": 1, "head": {"hidden": [16]}},
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "workers": 1, "early_stop": None}})
    path, metrics = run_train(spec, progress=lambda *_: None)
    pre = json.loads((path / "preprocessor.json").read_text())
    assert pre["size"] == [16, 16] and pre["channels"] == 3
    np.testing.assert_allclose(pre["mean"], [0.5, 0.4, 0.3]) and np.testing.assert_allclose(pre["std"], [0.2, 0.25, 0.3])
    stored = json.loads((path / "model.json").read_text())
    assert stored["kind"] == "image" and "pretrained" not in stored
    assert json.loads((path / stored["encoder_config"]).read_text())["model_type"] == "vit"
    from transformers import AutoModel

    weights = load_file(str(path / "model.safetensors"))
    pretrained = AutoModel.from_pretrained(str(backbone)).state_dict()
    first, second = "layers.0.attention.q_proj.weight", "layers.1.attention.q_proj.weight"
    torch.testing.assert_close(weights["encoder." + first], pretrained[first])                  # frozen
    assert not torch.equal(weights["encoder." + second], pretrained[second])                   # fine-tuned

    test_rows = prepare(spec, progress=lambda *_: None).test_raw.to_pandas()
    shutil.rmtree(backbone)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bundle = B.load(path)
    again = score(bundle, [pd.DataFrame({"image": test_rows["image"], "label": test_rows["label"]})], "label")
    assert again["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    assert again["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-12)
    assert bundle.schema["image"]["size"] == [16, 16] and bundle.schema["image"]["channels"] == 3


def test_a_size_channels_or_cnn_setting_a_backbone_would_ignore_is_refused():
    base = {"name": "x", "data": {"path": "d", "label": "y", "format": "images"},
            "model": {"kind": "image", "encoder": "some/vit"}}
    with pytest.raises(SpecError, match=r"data.image.size, data.image.channels, model.channels: model.kind image "
                                        r"takes the size, channels and layers of its pretrained backbone"):
        validate_spec({**base, "data": {**base["data"], "image": {"size": [48, 48], "channels": 3}},
                       "model": {**base["model"], "channels": [8]}})
    ok = validate_spec({**base, "data": {**base["data"], "image": {"column": "photo"}}})     # the column is its own
    assert ok.data.image.column == "photo"
    from jobs.spec import dump_spec, read_yaml
    assert validate_spec(read_yaml(dump_spec(ok))) == ok           # a bundle's spec.yaml (defaults written) reads back
