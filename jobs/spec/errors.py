"""`SpecError`, and pydantic's validation errors as lines a user can act on: file, field, value and fix."""
from __future__ import annotations

import difflib
import re
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from cluster.errors import BadInput
from jobs.spec.base import section_models


class SpecError(BadInput):
    """A spec that cannot run. `problems` holds one line per problem; str() lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(f"  - {p}" for p in problems))


def _union_tag(part) -> bool:
    """Pydantic names the member of a Union a value failed against in the error's location: a model's class
    name (SchedulerSpec), a literal (literal['none']), a type (int, list[str]). Not a field a user could write."""
    part = str(part)
    return part.startswith(("literal[", "list[", "dict[")) or part in ("int", "float", "str", "bool") or (
        part[:1].isupper() and part in section_models())


def _tag_at(e: dict) -> Optional[int]:
    """Where in the error's location a Union member is named, if anywhere. The last part of an unknown-key
    error is the key the user wrote (even one called `str`), never a member."""
    loc = e["loc"] if e["type"] != "extra_forbidden" else e["loc"][:-1]
    return next((i for i, p in enumerate(loc) if _union_tag(p)), None)


def _field_errors(err: ValidationError) -> list[dict]:
    """Pydantic's errors, with a Union's members merged: when a mapping fails `Union[Model, Literal['none']]`,
    the user needs what is wrong inside the mapping they wrote, not also "should be 'none'". Other unions
    keep every member's line (they say which forms are allowed), under the field's own name."""
    errors = err.errors()
    groups: dict = {}
    for e in errors:
        cut = _tag_at(e)
        groups.setdefault(tuple(e["loc"][:cut]) if cut is not None else ("", id(e)), []).append((cut, e))
    kept = []
    for group in groups.values():
        tagged = [(cut, e) for cut, e in group if cut is not None]
        if any(str(e["loc"][cut])[:1].isupper() for cut, e in tagged):
            group = [(cut, e) for cut, e in group if cut is None or not str(e["loc"][cut]).startswith("literal[")]
        for cut, e in group:
            kept.append({**e, "loc": e["loc"] if cut is None else e["loc"][:cut] + e["loc"][cut + 1:]})
    return kept


def format_errors(err: ValidationError, source: str, root: type[BaseModel],
                  overridden: tuple[tuple[str, ...], ...] = ()) -> list[str]:
    """One line per problem, each starting with `source` (the file), or with "--set" where the field (or one
    above it) was given by `--set` (`overridden`: those fields' paths). `root`: the model that was validated,
    whose fields name the keys allowed where an unknown one was given."""
    lines = []
    file = source
    for e in _field_errors(err):
        path = tuple(str(p) for p in e["loc"])
        kind = e["type"]
        value = e.get("input")
        if any(path[:len(o)] == o for o in overridden):
            source = "--set"
        else:
            # A check across fields fails at the section holding them ("data.split: val + test = 1.2"): where it
            # names a field `--set` gave, the file alone is not to blame.
            named = _named_overrides(path, overridden, e["msg"])
            source = f"{file} with --set {', '.join(named)}" if named else file
        loc = ".".join(path) or "(top level)"
        if kind == "extra_forbidden":
            lines.append(f"{source}: {loc}: unknown key. Fix: {unknown_key_hint(root, e['loc'])}")
        elif kind == "missing":
            lines.append(f"{source}: {loc}: required but missing. Fix: add {loc}: <value>")
        elif kind == "model_type" and (model := section_models().get(e.get("ctx", {}).get("class_name", ""))):
            # "Input should be a valid dictionary or instance of SplitSpec": a class name the user never wrote.
            keys = list(model.model_fields)
            named = ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")
            lines.append(f"{source}: {loc}: should be a mapping of settings ({named}), got {value!r}. Fix: "
                         f"write it as key: value, e.g. {loc}: {{{keys[0]}: ...}}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            fix = f". Fix: give {_WANTED[kind]} for {loc}" if kind in _WANTED else ""
            if kind == "literal_error" and isinstance(value, str):
                allowed = re.findall(r"'([^']*)'", e.get("ctx", {}).get("expected", ""))
                near = ([a for a in allowed if a.casefold() == value.strip().casefold()]
                        or difflib.get_close_matches(value, allowed, n=1, cutoff=0.6))
                fix = f"; did you mean {near[0]!r}?" if near else ""
            # A check across sections (model_validator of the whole spec) names its fields in its message.
            where = f"{loc}: " if path else ""
            lines.append(f"{source}: {where}{msg} (got {value!r}){fix}" if not isinstance(value, dict)
                         and "got " not in msg else f"{source}: {where}{msg}{fix}")
    return lines


# What a field of the wrong type wants, in the user's words (pydantic's error types: "unable to parse string as
# an integer (got 'ten')" said what is wrong, not what to write).
_WANTED = {"int_parsing": "a whole number (10)", "int_type": "a whole number (10)",
           "int_from_float": "a whole number (10)", "float_parsing": "a number (0.01, 1e-3)",
           "float_type": "a number (0.01, 1e-3)", "bool_parsing": "true or false", "bool_type": "true or false",
           "string_type": "text (quoted if it looks like a number)", "list_type": "a list ([a, b])",
           "dict_type": "a mapping of settings (key: value, one per line under it)"}


def overridden_paths(overrides: list[str]) -> tuple[tuple[str, ...], ...]:
    """The field paths `--set FIELD=VALUE` items give (("train", "epochs"), ...)."""
    return tuple(tuple(p for p in item.split("=", 1)[0].strip().split(".") if p)
                 for item in overrides or [] if "=" in item)


def source_of(problem: str, file: str, overridden: tuple[tuple[str, ...], ...] = ()) -> str:
    """Whom a problem found after validation blames (it names its fields in its text): the spec file, or "FILE
    with --set FIELD" where it names a field `--set` gave ("train.epochs=2" of --set train.epochs=2)."""
    named = _named_overrides((), overridden, problem)
    return f"{file} with --set {', '.join(named)}" if named else file


def _named_overrides(path: tuple, overridden: tuple[tuple[str, ...], ...], msg: str) -> list[str]:
    """The `--set` fields under `path` that `msg` names, by their whole dotted path or the part below `path`."""
    named = []
    for o in overridden:
        if o[:len(path)] == path and len(o) > len(path):
            whole, below = ".".join(o), ".".join(o[len(path):])
            if any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", msg) for n in (whole, below)):
                named.append(whole)
    return named


# Other tools' names for trainyard's keys (PyTorch, Keras, scikit-learn, Ray Tune), before any near spelling
# (num_epochs is nearer to ema_epochs than to epochs).
_ALIASES = {"learning_rate": "lr", "num_epochs": "epochs", "n_epochs": "epochs", "max_epochs": "epochs",
            "num_workers": "workers", "n_workers": "workers", "batchsize": "batch_size", "bs": "batch_size",
            "target": "label", "target_column": "label", "label_column": "label", "y": "label",
            "num_samples": "samples", "n_trials": "samples", "trials": "samples", "type": "kind",
            "hidden_layers": "hidden", "hidden_sizes": "hidden", "optim": "optimizer", "gpu": "use_gpu"}


def unknown_key_hint(root: type[BaseModel], loc: tuple) -> str:
    """How to fix the unknown key at `loc` of a `root` model: the allowed key it nearly spells, if one, and the
    keys allowed there ("did you mean 'sample'? remove it or fix the spelling; allowed keys here: path, ...")."""
    parent = _allowed_keys(root, loc[:-1])
    alias = _ALIASES.get(str(loc[-1]).lower()) if loc else None
    near = [alias] if alias in parent else \
        difflib.get_close_matches(str(loc[-1]), parent, n=1, cutoff=0.75) if loc else []
    if loc and not near:        # two letters swapped in a short key (`gpa` for gap) are far apart by difflib's ratio
        near = [k for k in parent if sorted(k) == sorted(str(loc[-1]).lower())][:1]
    allowed = f"; allowed keys here: {', '.join(parent)}"
    if loc and not near:
        # A key of another section (`early_stop` given at the top level, not under train:): say where it goes.
        elsewhere = [".".join(p) for p in _key_paths(root) if p[-1] == str(loc[-1]) and p[:-1] != tuple(loc[:-1])]
        if elsewhere:
            where = elsewhere[0] if len(elsewhere) == 1 else "one of " + ", ".join(elsewhere[:4])
            if tuple(loc[:-1]) == ("tune",) and len(elsewhere) == 1 and where.startswith(("train.", "model.")):
                # `tune.optimizer: {choice: [adam, sgd]}`: "move it to train.optimizer" read as where to search it.
                from jobs.spec.tune import SEARCH_AXES
                return (f"tune does not search {loc[-1]!r} (it searches {', '.join(SEARCH_AXES)}): set one value in "
                        f"{where}, and run a search for each value to compare them" + allowed)
            return f"{loc[-1]!r} belongs under another section: move it to {where}" + (allowed if parent else "")
    return (f"{f'did you mean {near[0]!r}? ' if near else ''}remove it or fix the spelling{allowed}" if parent
            else "remove it")


def _key_paths(root: type[BaseModel], prefix: tuple = (), depth: int = 4) -> list[tuple]:
    """Every key path of `root`'s sections (("train", "early_stop"), ...), `depth` sections deep at most."""
    paths = []
    for name in getattr(root, "model_fields", {}):
        paths.append(prefix + (name,))
        sub = _allowed_model(root, name)
        if sub is not None and depth > 1:
            paths += _key_paths(sub, prefix + (name,), depth - 1)
    return paths


def _allowed_model(model: Any, part: str) -> Optional[type[BaseModel]]:
    field = getattr(model, "model_fields", {}).get(part)
    if field is None:
        return None
    for cand in getattr(field.annotation, "__args__", (field.annotation,)):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _allowed_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    model: Any = root
    for part in loc:
        model = _allowed_model(model, part)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}).keys())
