"""Text through the same pipeline: a fitted preprocessor of kind "text" that packs each row as
``[table features (d) | token ids (max_length)]`` in one float32 row.

- The table columns (numeric, categorical; possibly none) go through the tabular preprocessor (`jobs.tabular`).
- The text columns go through the encoder's tokenizer (the `tokenizers` library's fast tokenizer: what a Hugging
  Face model folder's tokenizer.json holds), joined with its separator token when there are several, truncated
  and padded to `data.text.max_length`. Token ids are small integers, exact in float32, and the attention mask
  is `ids != pad_id` (the model derives it), so Ray Data packing, the worker's cache, DDP, checkpoints, tuning
  and evaluation run on the code path every other kind uses. Tokenization runs where every transform runs: in
  Ray Data `map_batches` over each split, and on the records serving gets.
- `model.encoder: scratch` fits a WordPiece tokenizer on the train split only and sizes a small BERT by it.

The encoder is resolved before any data is read (`resolve_encoder`), so a missing model or a `max_length`
above its limit stops the job at once. A bundle keeps the tokenizer files in `tokenizer/` (`save_files`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import pandas as pd

from cluster.errors import BadInput
from jobs.fitted import FittedPreprocessor
from jobs.hf import check_freeze, max_positions, resolve_pretrained
from jobs.tabular import Preprocessor

SCRATCH = "scratch"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"
# The special tokens a tokenizer is saved with (transformers' names), so that AutoTokenizer reads the bundle's.
SPECIAL_TOKENS = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
_SCRATCH_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                     "mask_token": "[MASK]"}


@dataclass
class Encoder:
    """The spec's `model.encoder` resolved on the driver: where its weights are (None: scratch), its config (a
    transformers config's dict; scratch: made once the tokenizer is fitted) and its tokenizer."""
    name: str                             # what the spec says
    folder: Optional[str]                 # the pretrained model's folder; None for scratch
    config: Optional[dict]                # the encoder's config dict (AutoConfig.for_model(**config))
    tokenizer: Any                        # tokenizers.Tokenizer (None for scratch until fitted)
    special_tokens: dict[str, str]
    lowercase: bool                       # lowercase the text before the tokenizer (data.text.lowercase: true)

    @property
    def model_source(self) -> dict:
        """What the model's constructor needs of it (`jobs.text_model.text_model_config`)."""
        return {"config": self.config, "pretrained": self.folder}


def resolve_encoder(model_spec, data_spec) -> Encoder:
    """`model.encoder` found offline and checked against the spec (max_length, freeze_layers, lowercase)."""
    settings = data_spec.text
    if model_spec.encoder == SCRATCH:
        # The scratch tokenizer's own normaliser lowercases (unless lowercase: false): `fit`.
        return Encoder(SCRATCH, None, None, None, dict(_SCRATCH_SPECIALS), lowercase=False)
    from transformers import AutoConfig, AutoTokenizer

    folder = resolve_pretrained(model_spec.encoder, field="model.encoder")
    try:
        config = AutoConfig.from_pretrained(folder)
        auto = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"model.encoder: {model_spec.encoder!r} cannot be read as a transformers model "
                       f"({type(exc).__name__}: {exc}); point it at a folder save_pretrained wrote") from None
    if not isinstance(getattr(config, "vocab_size", None), int):
        # A vision or audio model (ViT's config has no vocabulary) passed validate, then failed in every worker
        # with "'NoneType' object has no attribute 'dtype'", retried up to train.max_failures.
        raise BadInput(f"model.encoder: {model_spec.encoder!r} is a {config.model_type} model, not a text encoder "
                       "(its config has no vocab_size); point it at a text model's folder (BERT-like: "
                       "all-MiniLM-L6-v2, bert-base-uncased), or use model.kind: image for an image model")
    tokenizer = getattr(auto, "backend_tokenizer", None)
    if tokenizer is None:
        raise BadInput(f"model.encoder: {model_spec.encoder!r} has no fast tokenizer (tokenizer.json); save the "
                       "model's tokenizer with a recent transformers (it writes tokenizer.json) and use that folder")
    if auto.pad_token_id is None or auto.sep_token is None:
        raise BadInput(f"model.encoder: {model_spec.encoder!r}'s tokenizer has no padding or separator token; "
                       "trainyard fine-tunes encoders (BERT-like models) that have both")
    words, rows = tokenizer.get_vocab_size(), config.vocab_size
    if words > rows or words < rows // 2:
        # A folder of config.json and weights alone: AutoTokenizer made a BERT tokenizer of 5 tokens, every word
        # became [UNK], and the run trained a model that predicts one class, saying nothing of why. More tokens
        # than the model's rows: ids past its embedding table, an IndexError in every worker.
        raise BadInput(f"model.encoder: {model_spec.encoder!r}: its tokenizer has {words:,} tokens, the model "
                       f"{rows:,} (config.json vocab_size): "
                       + ("the folder lacks the model's own tokenizer files (tokenizer.json, vocab.txt, "
                          "tokenizer_config.json); copy them from where the model came from"
                          if words < rows else "the tokenizer is another model's; use the one saved with it"))
    limit = max_positions(config)
    if limit is not None and settings.max_length > limit:
        raise BadInput(f"data.text.max_length: {settings.max_length} is above what model.encoder "
                       f"{model_spec.encoder!r} takes ({limit} positions); set data.text.max_length to {limit} "
                       "or less")
    check_freeze(config, model_spec.freeze_layers, model_spec.encoder)
    lowercases = tokenizer.normalizer is not None and tokenizer.normalizer.normalize_str("A") == "a"
    if settings.lowercase is False and lowercases:
        raise BadInput(f"data.text.lowercase: false, but the tokenizer of {model_spec.encoder!r} lowercases all "
                       "text itself (an uncased model); set data.text.lowercase: auto")
    specials = {k: getattr(auto, k) for k in SPECIAL_TOKENS if getattr(auto, k, None) is not None}
    return Encoder(model_spec.encoder, str(folder), config.to_dict(), _clean(tokenizer), specials,
                   lowercase=settings.lowercase is True)


def _clean(tokenizer):
    """A copy of `tokenizer` that neither truncates nor pads (a saved tokenizer.json may do either: MiniLM's pads
    to 128): the preprocessor sets its own, and the bundle keeps the tokenizer without them."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


# A text is cut to this many characters per token of max_length before it is tokenized. Tokenizing costs ~0.9 s
# a megabyte here, and a replica tokenizes on one thread: a 6 MB text (under the 8 MB body limit) held every
# other request 5 s. The first max_length tokens are the same unless they average over 100 characters each,
# which BERT's WordPiece gives only for words longer than its 100-character limit (each one [UNK]).
CHARS_PER_TOKEN = 100


def joined_texts(df: pd.DataFrame, columns: list[str], separator: str, lowercase: bool,
                 max_chars: Optional[int] = None) -> list[str]:
    """One string per row: the text columns joined with the separator token (missing text is empty), each
    column's text cut to `max_chars` characters first when given."""
    parts = []
    for c in columns:
        values = df[c] if c in df else pd.Series([""] * len(df), index=df.index)
        texts = ["" if not isinstance(v, str) else v[:max_chars] for v in values.tolist()]
        parts.append([t.lower() for t in texts] if lowercase else texts)
    return [f" {separator} ".join(row) for row in zip(*parts)] if len(parts) > 1 else parts[0]


def fit_scratch_tokenizer(texts, spec_scratch, lowercase: bool):
    """A WordPiece tokenizer (BERT's pipeline) fitted on `texts` (an iterator of strings of the train split)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    sp = _SCRATCH_SPECIALS
    tok = Tokenizer(models.WordPiece(unk_token=sp["unk_token"]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    order = [sp[k] for k in SPECIAL_TOKENS]           # [PAD] first: id 0
    # min_frequency 2: a merge met once in the whole train split is not learned, so most words met once (a
    # patient's name in one note) are read as pieces, not kept whole in the bundle's vocabulary (one whose pieces
    # recur in other words still can be: README says so).
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=spec_scratch.vocab_size, min_frequency=2,
                                                             special_tokens=order, show_progress=False))
    cls, sep = sp["cls_token"], sp["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    return tok


def scratch_config(spec_scratch, vocab_size: int, max_length: int, pad_id: int) -> dict:
    """The config of a small BERT trained from scratch (model.scratch), sized to the fitted vocabulary."""
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=spec_scratch.hidden,
                      num_hidden_layers=spec_scratch.layers, num_attention_heads=spec_scratch.heads,
                      intermediate_size=4 * spec_scratch.hidden, max_position_embeddings=max_length,
                      pad_token_id=pad_id).to_dict()


@dataclass
class TextPreprocessor(FittedPreprocessor):
    kind: ClassVar[str] = "text"

    tabular: Preprocessor                 # the table columns' preprocessing (and the label's)
    text: list[str]                       # text columns, joined in this order
    max_length: int                       # tokens per row, special tokens included
    lowercase: bool                       # lowercase before the tokenizer
    pad_id: int                           # the padding token's id: the model's attention mask is ids != pad_id
    special_tokens: dict[str, str]        # pad/unk/cls/sep/mask token strings (what the tokenizer is saved with)
    encoder: str                          # model.encoder as the spec named it (for the record)
    tokenizer_dir: str = TOKENIZER_DIR    # the bundle's folder of tokenizer files
    # Text columns some rows of the data left empty (null, "" or whitespace): training read those as empty text,
    # so a prediction may leave them out too. The other text columns are required (the model never saw one empty).
    gaps: list[str] = field(default_factory=list)
    _tokenizer: Any = field(default=None, repr=False, compare=False)   # tokenizers.Tokenizer, not JSON state
    _whole: Any = field(default=None, repr=False, compare=False)       # the same, truncating nothing (`cut`)

    def __post_init__(self):
        if self._tokenizer is not None:
            self._tokenizer = self._sized(self._tokenizer)

    def _sized(self, tokenizer):
        tok = _clean(tokenizer)
        tok.enable_truncation(self.max_length)
        tok.enable_padding(length=self.max_length, pad_id=self.pad_id, pad_token=self.special_tokens["pad_token"])
        return tok

    # ------------------------------------------------------------------ what the tabular part knows
    task = property(lambda self: self.tabular.task)
    label = property(lambda self: self.tabular.label)
    classes = property(lambda self: self.tabular.classes)
    label_center = property(lambda self: self.tabular.label_center)
    label_scale = property(lambda self: self.tabular.label_scale)
    stats = property(lambda self: self.tabular.stats)

    @property
    def tabular_dim(self) -> int:
        return self.tabular.feature_dim

    @property
    def feature_dim(self) -> int:
        return self.tabular.feature_dim + self.max_length

    @property
    def feature_names(self) -> list[str]:
        return self.tabular.feature_names + list(self.text)

    @property
    def separator(self) -> str:
        return self.special_tokens["sep_token"]

    # ------------------------------------------------------------------ apply
    def token_ids(self, df: pd.DataFrame) -> np.ndarray:
        """(len(df), max_length) token ids of the joined text columns, truncated and padded."""
        if self._tokenizer is None:
            raise BadInput("this text preprocessor has no tokenizer: load it with its bundle folder "
                           "(jobs.bundle.load), which holds tokenizer/")
        encodings = self._tokenizer.encode_batch(joined_texts(df, self.text, self.separator, self.lowercase,
                                                              self.max_length * CHARS_PER_TOKEN))
        return np.array([e.ids for e in encodings], dtype=np.float32).reshape(len(df), self.max_length)

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        return np.concatenate([self.tabular.transform(df), self.token_ids(df)], axis=1)

    def cut(self, df: pd.DataFrame) -> list[tuple[int, int]]:
        """(row position, its tokens) of the rows whose text is longer than max_length tokens, [CLS] and [SEP]
        counted (at least that many, for a text over max_length * CHARS_PER_TOKEN characters): the model reads
        their first max_length tokens alone. A triage note's last line ("TODAY: pulseless") after a long history
        was never read, and nothing said so. A text of no more UTF-8 bytes than tokens is not tokenized again
        (every token covers a byte at least)."""
        texts = joined_texts(df, self.text, self.separator, self.lowercase, self.max_length * CHARS_PER_TOKEN)
        longer = [i for i, t in enumerate(texts) if len(t) + 2 > self.max_length
                  or len(t.encode("utf-8", "surrogatepass")) + 2 > self.max_length]
        if not longer:
            return []
        if self._whole is None:
            self._whole = _clean(self._tokenizer)
        counts = [len(e.ids) for e in self._whole.encode_batch([texts[i] for i in longer])]
        return [(i, n) for i, n in zip(longer, counts) if n > self.max_length]

    def cut_records(self, records: list[dict]) -> list[dict]:
        """`cut` of request records, as /predict and bundle.predict say it: [{"record", "tokens", "read"}]."""
        frame = pd.DataFrame({c: [r.get(c) for r in records] for c in self.text}, index=range(len(records)))
        return [{"record": i, "tokens": n, "read": self.max_length} for i, n in self.cut(frame)]

    def record_problems(self, records: list[dict]) -> list[str]:
        """A text field must be a non-empty string in every record, unless the training data left it empty too
        (`gaps`: missing, null, NaN or blank is then read as empty text, as training read it); then the table
        columns' own refusals."""
        problems = []
        for i, r in enumerate(records):
            for c in self.text:
                v = r.get(c)
                if c in self.gaps and (v is None or (isinstance(v, float) and v != v)
                                       or (isinstance(v, str) and not v.strip())):
                    continue
                if v is None:
                    problems.append(f"record {i}: {c} is missing; it is a required text field (a non-empty string)")
                elif not isinstance(v, str):
                    problems.append(f"record {i}: {c}={v!r} is not a string; send the text as a string")
                elif not v.strip():
                    problems.append(f"record {i}: {c} is empty; send a non-empty text")
        return problems + self.tabular.record_problems(records)

    def frame_problems(self, df: pd.DataFrame) -> list[str]:
        return self.tabular.frame_problems(df)

    # ------------------------------------------------------------------ state and files
    def to_dict(self) -> dict:
        return {"kind": self.kind, "task": self.task, "tabular": self.tabular.to_dict(), "text": list(self.text),
                "max_length": self.max_length, "lowercase": self.lowercase, "pad_id": self.pad_id,
                "special_tokens": dict(self.special_tokens), "encoder": self.encoder,
                "tokenizer_dir": self.tokenizer_dir, "gaps": list(self.gaps)}

    @classmethod
    def from_dict(cls, d: dict) -> "TextPreprocessor":
        """The state alone: no tokenizer yet (`from_bundle` reads it from the bundle's tokenizer/ folder)."""
        fields = {k: v for k, v in d.items() if k not in ("kind", "task")}
        fields["tabular"] = Preprocessor.from_dict(fields["tabular"])
        return cls(**fields)

    @classmethod
    def from_bundle(cls, d: dict, folder) -> "TextPreprocessor":
        from tokenizers import Tokenizer

        pre = cls.from_dict(d)
        path = Path(folder) / pre.tokenizer_dir / TOKENIZER_FILE
        if not path.is_file():
            raise BadInput(f"{folder}: a text bundle needs {pre.tokenizer_dir}/{TOKENIZER_FILE}, which is missing; "
                           "re-export the bundle with trainyard train")
        pre._tokenizer = pre._sized(Tokenizer.from_file(str(path)))
        return pre

    def save_files(self, folder) -> None:
        """tokenizer/: the tokenizer as transformers saves it (tokenizer.json, tokenizer_config.json...), without
        the truncation and padding this preprocessor applies, so AutoTokenizer.from_pretrained reads it too."""
        from transformers import PreTrainedTokenizerFast

        PreTrainedTokenizerFast(tokenizer_object=_clean(self._tokenizer), model_max_length=self.max_length,
                                **self.special_tokens).save_pretrained(str(Path(folder) / self.tokenizer_dir))

    def schema_features(self) -> list[dict]:
        """schema.json's entries of the text fields (truncated to max_length tokens): required and non-empty,
        unless the training data left the column empty in some rows (`gaps`)."""
        return [{"name": c, "type": "text", "max_length": self.max_length, "required": c not in self.gaps,
                 **({"missing": "read as empty text, as training read its rows without one"} if c in self.gaps
                    else {})} for c in self.text]


def fit(train_raw, data_spec, model_spec, encoder: Encoder, *, numeric: list[str], categorical: list[str],
        text: list[str], task: str, classes: Optional[list[Any]] = None,
        gaps: Optional[list[str]] = None) -> tuple[TextPreprocessor, dict]:
    """Fit the table columns' preprocessing on the train split (one Ray Data pass, as `jobs.tabular` does) and,
    for a scratch encoder, the tokenizer (the train split's text only); returns (the preprocessor, the tabular
    fit's aggregated statistics, for the profile). A scratch encoder's config is set on `encoder` here. `gaps`:
    the text columns the data leaves empty in some rows (a prediction may then leave them empty too)."""
    from jobs.tabular import fit_with_stats

    tabular, stats = fit_with_stats(train_raw, data_spec, numeric=numeric, categorical=categorical, task=task,
                                    classes=classes)
    tokenizer = encoder.tokenizer
    max_length = data_spec.text.max_length
    if encoder.folder is None:
        lowercase = data_spec.text.lowercase is not False     # auto: lowercase (small data: fewer, denser tokens)
        batches = train_raw.select_columns(text).iter_batches(batch_format="pandas", batch_size=4096)
        texts = (t for df in batches for t in joined_texts(df, text, encoder.special_tokens["sep_token"], False))
        tokenizer = fit_scratch_tokenizer(texts, model_spec.scratch, lowercase)
        encoder.tokenizer = tokenizer
        encoder.config = scratch_config(model_spec.scratch, tokenizer.get_vocab_size(), max_length,
                                        tokenizer.token_to_id(encoder.special_tokens["pad_token"]))
    pad_id = tokenizer.token_to_id(encoder.special_tokens["pad_token"])
    tabular.stats["text"] = {"columns": list(text), "vocab_size": tokenizer.get_vocab_size()}
    pre = TextPreprocessor(tabular=tabular, text=list(text), max_length=max_length, lowercase=encoder.lowercase,
                           pad_id=pad_id, special_tokens=dict(encoder.special_tokens), encoder=encoder.name,
                           gaps=list(gaps or []), _tokenizer=tokenizer)
    # How much of the train split's text the model never reads (`cut`), on its first rows: said by `prepare`.
    sample = train_raw.select_columns(text).limit(CUT_SAMPLE_ROWS).to_pandas()
    cut = pre.cut(sample)
    tabular.stats["text"]["cut"] = {"rows": len(cut), "of": len(sample),
                                    "longest": max((n for _, n in cut), default=0),
                                    "limit": max_positions(encoder.config or {})}
    return pre, stats


CUT_SAMPLE_ROWS = 2000      # rows of the train split `fit` tokenizes whole to count the texts cut at max_length


def cut_note(pre: TextPreprocessor) -> Optional[str]:
    """"12 of 300 train rows hold text longer than ..." (`fit`'s count), or None when no row's text is cut."""
    cut = pre.tabular.stats.get("text", {}).get("cut") or {}
    if not cut.get("rows"):
        return None
    raise_to = (f" (model.encoder takes up to {cut['limit']})" if cut.get("limit") and cut["limit"] > pre.max_length
                else "")
    return (f"{cut['rows']} of {cut['of']:,} train row(s){' looked at' if cut['of'] >= CUT_SAMPLE_ROWS else ''} hold "
            f"text longer than data.text.max_length={pre.max_length} tokens (the longest {cut['longest']:,}): the "
            f"model reads their first {pre.max_length} alone, in training and when serving (/predict says it of "
            f"each such record: `truncated`). Raise data.text.max_length{raise_to} if what matters may come late "
            "in a text")
