"""The base of every spec section model."""
from __future__ import annotations

import typing

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class StrictModel(BaseModel):
    """A spec section: an unknown key is an error (a typo would otherwise be silently ignored), and so is a
    bad value assigned after validation (`--set`, a trial's overrides)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_no_for_a_number(cls, value, info: ValidationInfo):
        # pydantic takes true for 1 in a number field, and YAML reads true/false/yes/no/on/off as such: a
        # `epochs: yes` or `hidden: [64, on]` would train with 1 silently.
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else bool
        if _mentions(annotation, (bool, typing.Any)) or not _mentions(annotation, (int, float)):
            return value
        if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
            raise ValueError("a yes/no value where a number belongs (YAML reads true, false, yes, no, on and off "
                             "as yes/no); give a number")
        return value


def _mentions(annotation, types: tuple) -> bool:
    """Whether a field's type is one of `types` or holds one (a union, a list, a dict's values)."""
    return any(annotation is t for t in types) or any(_mentions(a, types) for a in typing.get_args(annotation))


def section_models() -> dict[str, type[StrictModel]]:
    """Every spec model by class name (pydantic names a Union's member by it in an error's location)."""
    found: dict[str, type[StrictModel]] = {}
    todo = list(StrictModel.__subclasses__())
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found
