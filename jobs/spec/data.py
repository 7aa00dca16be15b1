"""The `data` section: where the rows are, which column is the label, how they are split and prepared."""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from jobs.spec.base import StrictModel
from jobs.spec.monitor import window_seconds


class FeatureSpec(StrictModel):
    """Which columns are features. Omitted lists are inferred from the data (see the run summary)."""

    numeric: Optional[list[str]] = Field(None, description="Columns treated as numbers (imputed, scaled).")
    categorical: Optional[list[str]] = Field(None, description="Columns one-hot encoded, with an 'unknown' slot.")
    text: Optional[list[str]] = Field(
        None, description="model.kind text: free-text columns, tokenized for the encoder (several are joined with "
                          "the tokenizer's separator). Inferred when omitted: strings of 20+ characters on average, "
                          "mostly distinct.")
    exclude: list[str] = Field(default_factory=list, description="Columns never used (ids, timestamps, leaks).")

    @property
    def listed(self) -> list[str]:
        """Every column the lists name."""
        return (self.numeric or []) + (self.categorical or []) + (self.text or [])

    @model_validator(mode="after")
    def _no_overlap(self):
        lists = {"numeric": self.numeric, "categorical": self.categorical, "text": self.text}
        for a, b in (("numeric", "categorical"), ("numeric", "text"), ("categorical", "text")):
            both = set(lists[a] or []) & set(lists[b] or [])
            if both:
                raise ValueError(f"columns {sorted(both)} are listed as both {a} and {b}; keep each in one list")
        both = set(self.listed) & set(self.exclude)
        if both:
            raise ValueError(f"columns {sorted(both)} are listed as features and under exclude; keep each column in "
                             "one list (exclude drops it)")
        if self.text is not None and not self.text:
            raise ValueError("text is empty; list at least one text column, or remove it to have them inferred")
        return self


class TextSpec(StrictModel):
    """How text columns become token ids (model.kind text)."""

    max_length: int = Field(128, ge=4, le=8192, description="Tokens kept per row (the separators and special "
                                                            "tokens included); longer text is truncated.")
    lowercase: Union[Literal["auto"], bool] = Field(
        "auto", description="auto: as the encoder's tokenizer does (an uncased model lowercases); true: lowercase "
                            "the text first; false: keep case (refused for a tokenizer that lowercases anyway).")


class SplitSpec(StrictModel):
    """Deterministic train/val/test split: by a seeded hash of each row (stratified by label for classification),
    of each row's group (`by`), or by time (`order`)."""

    val: float = Field(0.15, ge=0.0, lt=1.0, description="Fraction of rows for validation.")
    test: float = Field(0.15, ge=0.0, lt=1.0, description="Fraction of rows for the test metrics.")
    seed: int = Field(0, description="Seed of the split; the same seed gives the same split.")
    by: Optional[str] = Field(
        None, description="A column naming whom or what each row belongs to (a patient, a machine, a customer): all "
                          "of a group's rows go to one split, so the test split measures the model on groups it "
                          "never saw. Read for the split alone, never a feature.")
    order: Optional[str] = Field(
        None, description="A column of times (a date, a timestamp, or a number that counts up): the latest rows "
                          "are the test split, those before them validation, the earliest train, as the model will "
                          "meet the future. Read for the split alone, never a feature; not stratified, not seeded.")
    gap: Optional[Union[float, str]] = Field(
        None, description="With order: how long after its time a row's label is known (30d, 12h, 2w; a number in "
                          "the order column's units where it holds numbers). The rows of train within it before "
                          "validation's start, and of validation before test's, are left out, so no label the model "
                          "learnt from was made from the period it is scored on.")

    @field_validator("gap", mode="before")
    @classmethod
    def _quoted_number(cls, v):
        # `gap: "30"` (or YAML 1.1's `1e3`, read as text) is the number it writes, not a span without its unit.
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return v
        return v

    @model_validator(mode="after")
    def _leaves_train(self):
        if self.val + self.test >= 0.95:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves (almost) nothing to train on; keep it below 0.95")
        if self.by and self.order:
            raise ValueError("by and order are both set; split by groups (by) or by time (order), not both")
        if self.order and self.seed != 0:
            # Unused there: the split by time takes the latest rows, and would read as a seeded one without a word.
            # (0, the default, is what every resolved spec.yaml holds.)
            raise ValueError(f"seed ({self.seed}) is not used with order: the split by time takes the latest rows as "
                             "the test split whatever the seed; remove seed, or split by row or group instead")
        if self.gap is not None:
            self._gap_ok()
        return self

    def _gap_ok(self) -> None:
        if not self.order:
            raise ValueError(f"gap ({self.gap!r}) is for a split by time: set order to the column of times, or remove "
                             "gap (a split by row or group has no before and after)")
        if isinstance(self.gap, str):
            form = ("a positive number and a unit s, h, d or w (e.g. 30d, 12h, 2w; a number alone where the order "
                    "column holds numbers)")
            if self.gap.strip().endswith("m"):
                # `1m` read as a minute left nothing out of a monthly credit book, said as "0 rows": a label's delay
                # in minutes is rare, a month written 1m is not.
                raise ValueError(f"gap {self.gap!r}: m would be minutes (a month is 30d); write {form}")
            try:
                window_seconds(self.gap)
            except ValueError as exc:
                if "at most" in str(exc):   # the form is right, the span too long: said so (was "must be ... e.g.")
                    raise ValueError(f"gap {self.gap!r} must be at most 520w (ten years)") from None
                raise ValueError(f"gap {self.gap!r} must be {form}") from None
        elif not self.gap > 0 or self.gap == float("inf"):
            raise ValueError(f"gap must be a positive span (30d) or number, got {self.gap!r}")


class PreprocessSpec(StrictModel):
    """Preprocessing fitted on the train split only; its state is plain JSON in the bundle."""

    impute: Literal["mean", "median", "most_frequent", "constant"] = Field(
        "median", description="How missing numeric values are filled.")
    fill_value: Optional[float] = Field(
        None, description="The number a missing value gets when impute is 'constant' (required then, and only then).")
    scale: Literal["standard", "minmax", "none"] = Field("standard", description="Numeric scaling.")
    max_categories: int = Field(50, gt=0, description="Most frequent categories kept per column; rarer ones map to 'unknown'.")
    unknown_category: Literal["ignore", "error"] = Field(
        "ignore", description="At prediction time: map an unseen category to the 'unknown' slot, or reject the record.")
    categorical_max_ints: int = Field(
        10, ge=0, description="Integer columns with at most this many distinct values are inferred categorical.")

    @model_validator(mode="after")
    def _fill_value_with_constant(self):
        # A constant without its value filled 0.0, a number ten deviations from a pressure's mean, without a word;
        # a value without `constant` was dropped the same way.
        if self.impute == "constant" and self.fill_value is None:
            raise ValueError("impute is 'constant': give fill_value too, the number a missing value gets "
                             "(data.preprocess.fill_value: 0)")
        if self.impute != "constant" and self.fill_value == 0.0:
            # What every resolved spec.yaml (a run's, a bundle's) holds from before: the old default, unused.
            self.fill_value = None
        if self.impute != "constant" and self.fill_value is not None:
            raise ValueError(f"fill_value is used only with impute: constant, and impute is {self.impute!r}; set "
                             "impute: constant, or remove fill_value")
        return self


class ImageSpec(StrictModel):
    """Image input: every image is decoded, converted and resized to one shape."""

    size: list[int] = Field(default_factory=lambda: [64, 64], description="[height, width] after resizing.")
    channels: Literal[1, 3] = Field(1, description="1 = greyscale, 3 = RGB.")
    column: str = Field("image", description="Parquet: the column of encoded image bytes. Serving: the record field.")

    @field_validator("size")
    @classmethod
    def _hw(cls, v):
        if len(v) != 2 or any(d < 4 or d > 4096 for d in v):
            raise ValueError(f"size must be [height, width] between 4 and 4096, got {v}")
        return v


class AugmentSpec(StrictModel):
    """Augmentation of the train split only (applied in the training step, never to val/test/serving)."""

    hflip: bool = Field(False, description="Random horizontal flips.")
    random_crop: int = Field(0, ge=0, description="Pad by this many pixels, then crop back at a random offset.")


class DataSpec(StrictModel):
    path: Union[str, list[str]] = Field(description="A directory, a glob, a file, or a list of them; local or a pyarrow URI.")
    format: Optional[Literal["parquet", "csv", "images"]] = Field(
        None, description="Inferred from file extensions when omitted; images: a folder per class.")
    label: str = Field(description="The column to predict.")
    task: Optional[Literal["classification", "regression"]] = Field(
        None, description="Inferred from the label when omitted: strings, booleans and few distinct ints classify.")
    features: FeatureSpec = Field(default_factory=FeatureSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    image: Optional[ImageSpec] = Field(None, description="Image input (format: images, or parquet with image bytes).")
    text: TextSpec = Field(default_factory=TextSpec, description="Text input (model.kind text).")
    augment: Optional[AugmentSpec] = Field(None, description="Train-split augmentation for images.")
    max_corrupt_fraction: float = Field(
        0.05, ge=0, le=1, description="Images: undecodable files are listed and skipped up to this fraction.")

    @property
    def is_image(self) -> bool:
        return self.format == "images" or self.image is not None

    @model_validator(mode="after")
    def _image_defaults(self):
        if self.format == "images" and self.image is None:
            self.image = ImageSpec()
        if self.format == "csv" and self.image is not None:
            raise ValueError("data.image needs format: images (class folders) or parquet (an image bytes column)")
        if self.augment is not None and not self.is_image:
            raise ValueError("data.augment applies to images only; remove it or set data.format: images")
        if self.augment is not None and self.image and self.augment.random_crop >= min(self.image.size):
            # A shift as large as the image leaves many training images all padding (40 px for 32x32 trained).
            raise ValueError(f"data.augment.random_crop ({self.augment.random_crop}) must be under the image's size "
                             f"{self.image.size[0]}x{self.image.size[1]} (a few pixels, e.g. "
                             f"{max(1, min(self.image.size) // 8)}): a larger shift leaves images all padding")
        if self.is_image and self.task == "regression":
            raise ValueError("image jobs are classification only; remove data.task: regression")
        return self

    @field_validator("format", "task", mode="before")
    @classmethod
    def _any_case(cls, v):
        return v.strip().lower() if isinstance(v, str) else v          # `task: Regression`, `format: CSV`

    @field_validator("path")
    @classmethod
    def _non_empty(cls, v):
        if (isinstance(v, str) and not v.strip()) or (isinstance(v, list) and not v):
            raise ValueError("data.path is empty; give a directory, a glob or a list of files")
        return v

    @model_validator(mode="after")
    def _label_not_a_feature(self):
        if self.label in self.features.listed:
            raise ValueError(f"the label {self.label!r} is also listed as a feature; remove it from data.features")
        if self.label in self.features.exclude:
            raise ValueError(f"the label {self.label!r} is listed under data.features.exclude; remove it from there "
                             "(the label is never a feature; exclude lists the columns neither used nor predicted)")
        for how in ("by", "order"):
            column = getattr(self.split, how)
            if column is None:
                continue
            if self.format == "images" or (self.is_image and how == "order"):
                raise ValueError(f"split.{how} is for tables" + (
                    " (and a Parquet table of images, by a column of it)" if how == "by" else "") +
                    f"; an image {'folder' if self.format == 'images' else 'job'} is split by a seeded hash of "
                    f"each image. Remove split.{how}")
            if column == self.label:
                raise ValueError(f"split.{how} is the label {self.label!r}; name the column the rows are "
                                 + ("grouped by (a patient, a machine)" if how == "by" else "ordered by (a date)"))
            lists = [n for n in ("numeric", "categorical", "text") if column in (getattr(self.features, n) or [])]
            if lists:
                raise ValueError(f"split.{how} column {column!r} is also listed under data.features.{lists[0]}; the "
                                 "column a split is made by is no feature (" + (
                                     "every group of the test split would be one training never saw" if how == "by"
                                     else "every later time would be one training never saw")
                                 + f"): remove it from data.features.{lists[0]}")
        return self
