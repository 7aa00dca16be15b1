"""The base of every spec section model."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A spec section: an unknown key is an error (a typo would otherwise be silently ignored), and so is a
    bad value assigned after validation (`--set`, a trial's overrides)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def section_models() -> dict[str, type[StrictModel]]:
    """Every spec model by class name (pydantic names a Union's member by it in an error's location)."""
    found: dict[str, type[StrictModel]] = {}
    todo = list(StrictModel.__subclasses__())
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found
