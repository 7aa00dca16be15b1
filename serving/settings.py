"""What a deploy starts from, settled on the driver before Serve is touched: the serve settings, the app's name,
the token's environment variable, and the checks of the settings against the bundle. `serving.server` (deploy)
and `serving.app.build_app` (config-file deploys) both use these; this module imports neither.
"""
from __future__ import annotations

import re
from typing import Optional

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
    from serving.schema import RequestChecker
    try:
        RequestChecker(bundle.schema, max_records=serve_spec.max_records, max_body_bytes=1,
                       required_features=serve_spec.required_features, unknown_fields=serve_spec.unknown_fields)
    except ValueError as exc:
        raise ServeError(str(exc), exit_code=EXIT_BAD_INPUT) from None
