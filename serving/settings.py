"""What a deploy starts from, settled on the driver before Serve is touched: the serve settings (and which of
them a bundle's own spec.yaml may set), the app's name, the token's environment variable, and the checks of the
settings against the bundle. `serving.server` (deploy) and `serving.app.build_app` (config-file deploys) both use
these; this module imports neither.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

from cluster.errors import EXIT_BAD_INPUT, Failure
from jobs.spec import ServeSpec, SpecError, read_yaml_file

TOKEN_ENV = "TRAINYARD_SERVE_TOKEN"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ServeError(Failure):
    """Serving could not start or update; the message says why and what to do. Exit 1, or 2 (`exit_code`)
    where the fix is in what the user gave (a name, a setting the bundle cannot honour)."""


def resolve_spec(spec=None, *, host: Optional[str] = None, port: Optional[int] = None) -> ServeSpec:
    """The serve settings: a JobSpec's `serve` section, a ServeSpec, or the defaults; flags override."""
    serve_spec = getattr(spec, "serve", spec) or ServeSpec()
    updates = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    return serve_spec.model_copy(update=updates) if updates else serve_spec


def bundle_serve_section(bundle_dir: Path) -> tuple[dict, dict[str, Any]]:
    """The `serve` section of a bundle's own spec.yaml cut to what a bundle may decide (`ServeSpec.FROM_BUNDLE`:
    batching, limits, required features), and each setting it carried that is not taken ("serve.host",
    "serve.ray_actor_options.runtime_env", ...) with the bundle's value for it (`not_taken_line` names them to
    the operator). Serving someone else's bundle must not run their code (`ray_actor_options.runtime_env`) or
    expose the server (`host: 0.0.0.0`); a setting equal to its default is not listed, as every bundle's
    spec.yaml lists them all."""
    file = Path(bundle_dir) / "spec.yaml"
    if not file.is_file():
        return {}, {}
    # A bundle whose spec.yaml does not read is a damaged bundle: say so, never serve it with defaults.
    doc = read_yaml_file(file) or {}
    section = (doc.get("serve") if isinstance(doc, dict) else None) or {}
    if not isinstance(section, dict):
        raise SpecError([f"{file}: serve: expected a mapping of settings, got {section!r}"])
    defaults = ServeSpec().model_dump(mode="json")
    ignored = {name: value_at({"serve": section}, name) for key, value in section.items()
               if key not in ServeSpec.FROM_BUNDLE
               for name in _differing(f"serve.{key}", value, defaults.get(key, _ABSENT))}
    taken = {k: v for k, v in section.items() if k in ServeSpec.FROM_BUNDLE}
    # A bundle may lower the request limits, not raise them: one from elsewhere set max_records 100,000,000 and
    # max_body_mb 100,000, and a 1M-record request took a replica from 0.5 to 1.5 GB with no word.
    for name in RAISED_ONLY_BY_THE_OPERATOR:
        value, default = value_at({"serve": taken}, name), value_at({"serve": defaults}, name)
        if isinstance(value, (int, float)) and isinstance(default, (int, float)) and value > default:
            ignored[name] = value
            *path, last = name.split(".")[1:]
            holder = taken
            for key in path:
                holder = holder[key]
            holder.pop(last)
    return taken, ignored


# The request limits a bundle's spec.yaml may lower but not raise above their defaults (the operator may).
RAISED_ONLY_BY_THE_OPERATOR = ("serve.max_records", "serve.max_body_mb", "serve.max_ongoing_requests",
                               "serve.batch.max_size")


# The operator's settings an update keeps from the app it replaces when it is not given them (by --spec's serve
# section, --set, or the fields a ServeSpec was made with): an update that names only a bundle put the running
# app back on the defaults (4 replicas at most where the operator had capped it at 3, the route prefix at /, no
# prediction logging) with at most a note. host and port are the running Serve's anyway, the ingress is fixed
# per Ray cluster, and what FROM_BUNDLE lists comes with each bundle.
KEPT_ON_UPDATE = ("autoscaling", "ray_actor_options", "route_prefix", "max_surge_percent", "health_check_period_s",
                  "health_check_timeout_s", "access_log", "log", "monitor", "quantize", "drain_period_s",
                  "body_timeout_s")


def keep_running(spec: ServeSpec, running: Any) -> tuple[ServeSpec, list[str], list[str]]:
    """`spec` for an update of an app whose replicas run with the serve settings `running` (their plain dict):
    each KEPT_ON_UPDATE setting `spec` was not given takes its running value, and one given in part
    (`--set autoscaling.max_replicas=3`) keeps the rest of it. Also returns the names of the settings kept (those
    that came out other than `spec` had them) and of those that could not be: running values this version does
    not read (another trainyard wrote them), each left to `spec` on its own."""
    from pydantic import ValidationError

    part = spec._given_in_part
    lacking = [k for k in part if not isinstance(running, dict) or not isinstance(running.get(k), dict)]
    if lacking:
        raise in_part_error(spec, lacking)
    if not isinstance(running, dict):
        return spec, [], []
    given = {**spec.model_dump(mode="json", exclude_unset=True), **{k: section for k, (section, _) in part.items()}}
    merged = spec.model_dump(mode="json")
    kept, unread = [], []
    for key in KEPT_ON_UPDATE:
        if key not in running:
            continue
        value = running[key]
        if key in given:
            if not (isinstance(given[key], dict) and isinstance(value, dict)):
                continue
            value = overlay(value, given[key])
        if value == merged[key]:
            continue
        try:
            ServeSpec.model_validate({**merged, key: value})
        except ValidationError as err:
            # What the update gave does not go with the rest of the running section (`--set
            # autoscaling.max_replicas=2` where 3 replicas at least run): said, not dropped. The running section
            # was put aside as unreadable, and the app went back to the default minimum of 1, unasked.
            if key in given and _readable(merged, key, running[key]):
                raise SpecError([f"serve.{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}, "
                                 f"with {_given_text(given[key])} from this update and the rest kept from the running "
                                 f"app's serve.{key}; give what it conflicts with too (--set serve.{key}.FIELD=VALUE)"
                                 for e in err.errors()]) from None
            if key in part:         # what --set gave does not complete the running section: said, not dropped
                raise SpecError([f"--set: serve.{'.'.join(map(str, e['loc']))} (the running app's serve.{key}, "
                                 f"with what --set gave): {e['msg'].removeprefix('Value error, ')}; give the rest of "
                                 f"serve.{key} too" for e in err.errors()]) from None
            unread.append(key)
            continue
        merged[key] = value
        kept.append(key)
    return (ServeSpec.model_validate(merged) if kept else spec), kept, unread


def _readable(merged: dict, key: str, value: Any) -> bool:
    """Whether the running app's setting `key` (`value`) is one this version reads, on its own."""
    from pydantic import ValidationError
    try:
        ServeSpec.model_validate({**merged, key: value})
    except ValidationError:
        return False
    return True


def _given_text(given: Any) -> str:
    """What an update gave of a section, as --set writes it ("max_replicas=2")."""
    if not isinstance(given, dict):
        return repr(given)
    return ", ".join(f"{k}={v}" for k, v in given.items())


def kept_words(kept: list[str], part: dict) -> str:
    """The settings an update kept from the running app, for its line: a section --set gave part of (`part`: its
    given values) keeps the rest ("log but for path=/logs2, rotate_s=10, given here"); it read as kept whole, "not
    given in this update", though --set had given half of it."""
    return ", ".join(f"{k} but for {_given_text(part[k])}, given here" if k in part else k for k in kept)


def in_part_error(spec: ServeSpec, keys: list[str]) -> SpecError:
    """Sections --set gave in part with no running app's to complete them (a first start)."""
    return SpecError([f"{problem} (--set gave part of serve.{key}, and no running app has a {key} section to "
                      "complete it: give the rest too)" for key in keys for problem in spec._given_in_part[key][1]])


def overlay(base: dict, given: dict) -> dict:
    """`given` over `base`, section by section (a section `given` names keeps `base`'s other keys)."""
    out = dict(base)
    for key, value in given.items():
        out[key] = overlay(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def not_taken_line(names: list[str]) -> Optional[str]:
    """The operator's line naming the bundle's settings that were not taken; None for none."""
    if not names:
        return None
    return (f"[serve] not taken from the bundle's spec.yaml, which may set only "
            f"{', '.join(sorted(ServeSpec.FROM_BUNDLE))} (limits no higher than their defaults): {', '.join(names)}; "
            "if you want them, set them yourself (--host, --port, --spec SPEC or --set FIELD=VALUE)")


def value_at(tree: dict, name: str) -> Any:
    """The value at dotted `name` in nested mappings, or `_ABSENT`."""
    for key in name.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return _ABSENT
        tree = tree[key]
    return tree


_ABSENT = object()


def _differing(name: str, value: Any, default: Any) -> list[str]:
    """`name` if `value` is not the default; for a mapping, each of its keys that is not."""
    if isinstance(value, dict) and isinstance(default, dict):
        return [n for k, v in value.items() for n in _differing(f"{name}.{k}", v, default.get(k, _ABSENT))]
    return [] if value == default else [name]


def default_name(bundle) -> str:
    """The job name the bundle was trained under (its spec.yaml), else its folder's name."""
    name = bundle.lineage.get("name")
    if not name:
        try:
            doc = read_yaml_file(bundle.path / "spec.yaml")
        except SpecError:   # no readable spec.yaml: the folder names the app
            doc = None
        name = doc.get("name") if isinstance(doc, dict) else None
    name = name or (bundle.path.parent.name if bundle.path.name == "bundle" else bundle.path.name)
    return re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip("._-") or "model"


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise ServeError(f"--name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit",
                         exit_code=EXIT_BAD_INPUT)


def check_settings(bundle, serve_spec: ServeSpec) -> None:
    """Settings that depend on the bundle, checked here: the replicas would fail the same way, later."""
    from serving.predlog import check_log_settings
    from serving.schema import RequestChecker
    try:
        RequestChecker(bundle.schema, max_records=serve_spec.max_records, max_body_bytes=1,
                       required_features=serve_spec.required_features, unknown_fields=serve_spec.unknown_fields,
                       keep=serve_spec.log.keep if serve_spec.log else ())
        check_log_settings(bundle.schema, serve_spec.log and serve_spec.log.model_dump())
    except ValueError as exc:
        raise ServeError(str(exc), exit_code=EXIT_BAD_INPUT) from None
