"""YAML as trainyard reads and writes it (spec files, `--set` values, a bundle's spec.yaml, a staged job's
spec), and the `--set FIELD=VALUE` overrides. Every YAML file the project reads goes through `read_yaml_file`."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from jobs.spec.errors import SpecError


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with two fixes for specs:

    - `1e-3` is a number, as in YAML 1.2 (PyYAML follows YAML 1.1, which wants `1.0e-3` and reads `1e-3` as
      the text "1e-3": fine where the field is a number, baffling inside `choice: [1e-3, 1e-2]`);
    - a key given twice in one mapping is an error, not the last one silently winning (a second `tune:`
      block would drop the first one's settings without a word).
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":     # `<<: *anchor`: merged after this check,
                    continue                                       # so a key given beside it overrides it
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, str) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice in one mapping (lines {seen[key] + 1} and "
                        f"{key_node.start_mark.line + 1}); keep one, merging what each says", key_node.start_mark)
                if isinstance(key, str):
                    seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class _SpecDumper(yaml.SafeDumper):
    """Writes YAML that _SpecLoader reads back as it was: text such as '1e5' (a name, a column, an env value)
    keeps its quotes, which a YAML 1.1 writer would drop."""


_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
for _cls in (_SpecLoader, _SpecDumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))


def read_yaml(text: str):
    """YAML as a spec reads it (`--set` values too): see _SpecLoader."""
    return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass


def write_yaml(data) -> str:
    """YAML that read_yaml reads back unchanged (a staged job spec, a bundle's spec.yaml)."""
    return yaml.dump(data, Dumper=_SpecDumper, sort_keys=False)


def read_yaml_file(path: str | Path) -> Any:
    """A YAML file on disk as read_yaml reads it (None when empty). A missing, unreadable or malformed file
    is a SpecError naming the file, and for bad YAML the line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{path}: cannot be read ({exc.__class__.__name__}: {exc})"]) from None
    try:
        return read_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError([f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """`train.epochs=3` style overrides; values are parsed as YAML (3 → int, [1, 2] → list, null → None)."""
    problems = []
    for item in overrides or []:
        if "=" not in item:
            problems.append(f"{source} {item!r}: expected FIELD=VALUE, e.g. --set train.epochs=3")
            continue
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not key.strip():
            problems.append(f"{source} {item!r}: the field name is empty")
            continue
        if "" in parts:
            problems.append(f"{source} {item!r}: {key.strip()!r} has an empty part; fields are joined by single "
                            "dots, e.g. train.early_stop.patience")
            continue
        index = next((i for i, p in enumerate(parts) if p.strip().isdigit()), None)
        if index:           # model.hidden.0: no field is a number; a list is set whole
            whole = ".".join(parts[:index])
            problems.append(f"{source} {item!r}: {parts[index]!r} is not a field name (a list is not set item by "
                            f"item); set it whole, e.g. --set {whole}=[...]")
            continue
        node = raw
        for i, p in enumerate(parts[:-1]):
            if node.get(p) is None:
                node[p] = {}
            elif not isinstance(node[p], dict):   # a value is never replaced by a section without a word
                whole = ".".join(parts[:i + 1])
                problems.append(f"{source} {item!r}: {whole} is a value ({node[p]!r}), not a section of fields; "
                                f"set it whole, e.g. --set {whole}=...")
                node = None
                break
            node = node[p]
        if node is None:
            continue
        try:
            node[parts[-1]] = read_yaml(value) if value.strip() else None
        except yaml.YAMLError as exc:
            problems.append(f"{source} {item!r}: the value is not valid YAML ({exc.problem})")
    if problems:
        raise SpecError(problems)
    return raw
