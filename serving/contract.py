"""What an update takes from a served app's clients: the requests its running version accepts that the new one
would refuse (a feature gone while unknown fields are refused, a field newly required, a field of another type,
a category no longer accepted). A zero-downtime update that fails every request after the switch is downtime:
`serving.server.deploy` refuses it unless told (`trainyard serve --breaking`), and says what it would break.
"""
from __future__ import annotations

import shlex

from typing import Optional

from cluster.errors import EXIT_BAD_INPUT
from serving.schema import RequestChecker
from serving.settings import ServeError


def _checker(schema: dict, serve: dict) -> RequestChecker:
    return RequestChecker(schema, max_records=1, max_body_bytes=1,
                          required_features=serve.get("required_features") or (),
                          unknown_fields=serve.get("unknown_fields") or "reject",
                          keep=(serve.get("log") or {}).get("keep") or ())


def _names(names) -> str:
    return ", ".join(map(repr, names))


def _shape(image: dict) -> str:
    return "x".join(map(str, [*(image.get("size") or []), image.get("channels")]))


def lost_requests(old_schema: dict, old_serve: dict, new_schema: dict, new_serve: dict) -> list[str]:
    """What the new version (`new_schema`: its schema.json, `new_serve`: its serve settings as a dict) refuses of
    the requests the running one (`old_*`) accepts, one phrase each; empty when every such request still
    passes. Settings the running replicas hold that this trainyard cannot read count as the defaults."""
    try:
        old, new = _checker(old_schema, old_serve), _checker(new_schema, new_serve)
    except ValueError:          # the running settings name features its own bundle lacks: nothing to compare
        return []
    lost = []
    gone = [n for n in old.features if n not in new.features]
    if gone and new.reject_unknown_fields:
        lost.append(f"{_names(gone)} {'is' if len(gone) == 1 else 'are'} no longer a feature, and a record that "
                    "sends one is refused (serve.unknown_fields: reject)")
    # A field the running version keeps for its log (serve.log.keep) is sent by its clients: refused once neither
    # kept nor a feature.
    unkept = sorted(n for n in old.keep if n not in new.keep and n not in new.features)
    if unkept and new.reject_unknown_fields:
        lost.append(f"{_names(unkept)} {'is' if len(unkept) == 1 else 'are'} no longer kept for the log "
                    "(serve.log.keep), and a record that sends one is refused (serve.unknown_fields: reject)")
    required = [n for n in new.required if n not in old.required]
    if required:
        lost.append(f"{_names(required)} {'is' if len(required) == 1 else 'are'} now required, and a record "
                    "without it is refused")
    # A number sent to a category field is taken as that category (or the unknown one), unless it is refused.
    retyped = [f"{n!r} ({old.features[n]['type']} → {new.features[n]['type']})" for n in old.features
               if n in new.features and old.features[n]["type"] != new.features[n]["type"]
               and not ((old.features[n]["type"], new.features[n]["type"]) == ("number", "category")
                        and not new.reject_unknown_categories)]
    if retyped:
        lost.append(f"{', '.join(retyped)} takes values of another type")
    # An image model of another input size or channel count refuses the running version's pixel arrays (encoded
    # images are resized either way): a 32x32x3 client got 422 after an "updated" to a 48x48 grey model.
    before, after = old_schema.get("image") or {}, new_schema.get("image") or {}
    if before and after and (before.get("size"), before.get("channels")) != (after.get("size"), after.get("channels")):
        lost.append(f"pixel arrays of the running version's shape ({_shape(before)}) are refused, the new version "
                    f"takes {_shape(after)} (encoded images are still resized)")
    if new.reject_unknown_categories:
        for n, known in new.known.items():
            if n not in old.known:          # a new feature (old clients do not send it), or retyped (said above)
                continue
            dropped = sorted(old.known[n] - known) if old.reject_unknown_categories else None
            if dropped is None or dropped:
                what = f"its categories {_names(dropped[:5])}" if dropped else "any category it did not train on"
                lost.append(f"{n!r} refuses {what} (data.preprocess.unknown_category: error), which the running "
                            "version accepts")
    return lost


def check_update(name: str, running: dict, new_schema: dict, new_serve: dict, versions: tuple[str, str],
                 breaking: bool, progress) -> None:
    """Before an update of app `name`: `running` is what its replicas hold ({"schema": schema.json or None,
    "serve": their serve settings or None}); a ServeError (exit 2) naming what the new version would refuse of
    the requests the running one takes, unless `breaking`, when it is said and the update goes on."""
    if not isinstance(running.get("schema"), dict) or not isinstance(running.get("serve"), dict):
        return                  # a running version this machine cannot read (another node's folder): nothing known
    lost = lost_requests(running["schema"], running["serve"], new_schema, new_serve)
    if not lost:
        return
    said = (f"updating {name} from version {versions[0]} to {versions[1]} "
            f"{'refuses' if breaking else 'would refuse'} requests the running version takes: {'; '.join(lost)}")
    if breaking:
        progress(f"[serve] note: {said} (--breaking)")
        return
    raise ServeError(f"{said}. Its clients would get a 422 for each from the switch on. Serve the new version beside "
                     f"it (--name {name}-v2 --set route_prefix=/{name}-v2) while they move, or update anyway with "
                     "--breaking", exit_code=EXIT_BAD_INPUT)


def update_notes(name: str, running_schema: Optional[dict], running_metrics: Optional[dict], bundle,
                 old_version: str, old_source: Optional[str] = None,
                 where: tuple[Optional[int], Optional[str]] = (None, None)) -> list[str]:
    """What an update of app `name` to `bundle` changes in its answers, beside the requests it takes: the cut-off
    (`jobs.decision.change`), and a test score below the running version's (each on its own test split). A
    colleague's `serve` of a model of test F1 0.15 replaced one of 0.85 on the same app with no word of it.
    `old_source`: where the running version was served from (its payload's "from"), where known; `where`: the
    app's port and route prefix, which the command that serves it again needs (an update is refused without)."""
    from jobs.decision import change as cut_change      # here: jobs.fitted brings pandas to every command
    from jobs.replaced import worse_than

    classes = (((running_schema or {}).get("label") or {}).get("classes"), bundle.schema["label"].get("classes"))
    moved = ([f"[serve] note: {name}'s classes change from {_names(classes[0])} to {_names(classes[1])}: each "
              "answer's probabilities follow the new list (schema.json's label.classes)"]
             if classes[0] and classes[1] and list(classes[0]) != list(classes[1]) else [])
    before, after = ((running_schema or {}).get("label") or {}).get("decision"), bundle.schema["label"].get("decision")
    if running_schema and (said := cut_change(before, after)):
        moved.append(f"[serve] note: {name} {said}")     # a binary model's answers move with it
        if ({k: (before or {}).get(k) for k in ("positive", "rule")}
                != {k: (after or {}).get(k) for k in ("positive", "rule")}):
            return moved      # answered by another rule: not ranked (`worse_than` says why; the line above says how)
    test = (running_metrics or {}).get("test")
    if not isinstance(test, dict):
        return moved
    # Under one rule a retrain's cut-off value moves every time: its test score is compared all the same (it was
    # never, for min_recall bundles, while README promised it).
    worse = worse_than((old_version, test, before, None), bundle.metrics.get("test") or {}, bundle.task, after,
                       replaces=f"in {name}")
    port, route = where
    options = (f" --port {port}" if port else "") + (f" --set route_prefix={route}" if route not in (None, "/") else "")
    again = (f"{shlex.quote(old_source)} --name {name}{options}" if old_source else
             f"OUTPUT/bundles/{old_version} --name {name}{options} (OUTPUT: its run's output folder)")
    return moved + ([f"[serve] note: {worse}; to serve it again: trainyard serve {again}"] if worse else [])
