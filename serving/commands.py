"""`trainyard serve` and `trainyard predict` (each command's --help shows its own part: `SERVE_HELP`,
`PREDICT_HELP`)."""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Optional

from cluster.errors import BadInput, Failure
from serving.settings import (KEPT_ON_UPDATE, TOKEN_ENV, ServeError, bundle_serve_section, not_taken_line, overlay,
                              value_at)


SERVE_HELP = """Serve a bundle over HTTP with Ray Serve (Ctrl-C stops it).

    trainyard serve BUNDLE_DIR [--name NAME] [--host 127.0.0.1] [--port 8000] [--token T | --no-token]
                    [--timeout S] [--spec SPEC] [--set ...] [--address ADDRESS] [--verbose]

`serve` takes its settings from the bundle's own spec.yaml (only batch, max_records, max_body_mb,
max_ongoing_requests, required_features, unknown_fields: a bundle is data, not code), then
--spec (another job spec's `serve` section), then --set (`--set batch.max_size=32`, `serve.` optional), then
the flags. Serving a bundle under the --name of an app that another `trainyard serve` already serves on that
port updates that app in place, with no downtime, and returns. An update keeps the app's token unless --token
or --no-token says otherwise; one whose replicas fail to start, or do not answer within --timeout, is rolled
back to the version that was running.
"""

PREDICT_HELP = """Send a file's rows to a trainyard server, or to a bundle loaded here, and write the predictions.

    trainyard predict --url URL FILE [--out OUT] [--overwrite] [--token T] [--batch-size N] [--allow-missing]
    trainyard predict --bundle BUNDLE FILE [--out OUT] [--overwrite] [--batch-size N] [--allow-missing]

--bundle predicts in this process, as a server of that bundle would (the same code path and notes), with no server
and no Ray: for a batch job. Its rows have no request_id/record columns (nothing is logged for labels to join).

FILE: a .csv, .parquet or .jsonl file, a folder of .parquet or .csv shards, or for an image model an image file or a
folder of them. The rows go in requests of at most --batch-size records (default: the server's limit; 10,000 at a
time with --bundle); the output is the rows plus their predictions, as CSV on stdout or to --out (.csv, .parquet,
.jsonl; an existing file only with --overwrite). A file with no column for more than half of the model's features
is refused (a file meant for another model) unless --allow-missing.
"""


def register(subparsers, kit) -> None:
    """Add `serve` and `predict`; `kit` is the composition root's shared pieces (connect, progress)."""
    p = subparsers.add_parser("serve", help="serve a bundle over HTTP with Ray Serve (Ctrl-C stops it)",
                              description=SERVE_HELP, formatter_class=_raw())
    p.add_argument("bundle", help="a bundle folder, or a run's output folder holding bundle/")
    p.add_argument("--name", default=None,
                   help="app name (default: the job's name); serving another bundle under the same name updates it")
    p.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=None, help="HTTP port (default 8000; 0 picks a free one)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", default=None,
                      help=f"require 'Authorization: Bearer TOKEN' (default: ${TOKEN_ENV} if set; else an update "
                           "keeps the running app's token, and a new app has none)")
    auth.add_argument("--no-token", action="store_true",
                      help="serve without a token, also when updating an app that has one")
    p.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                   help="how long the new replicas may take to run and answer before the deploy fails (an update "
                        "is then rolled back); default 300")
    p.add_argument("--breaking", action="store_true",
                   help="update even when the new bundle refuses requests the running version takes (a feature "
                        "gone, one newly required, another type); default: refuse such an update, naming them")
    p.add_argument("--spec", default=None, help="take serve settings from this job spec's `serve` section")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a serve setting, e.g. --set autoscaling.max_replicas=2 (repeatable)")
    p.add_argument("--address", default=None,
                   help="Ray cluster to serve on (default: the one a `trainyard serve` on this port runs in, "
                        "else RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--verbose", action="store_true",
                   help="also print Ray's own log lines (Serve's controller, proxy and replicas), as Ray does")
    p.set_defaults(func=lambda args: cmd_serve(args, kit))

    p = subparsers.add_parser("predict", help="a file's rows predicted by a trainyard server, or by a bundle here",
                              description=PREDICT_HELP, formatter_class=_raw())
    p.add_argument("file", help="rows to predict: .csv, .parquet or .jsonl, or a folder of .parquet or .csv shards")
    by = p.add_mutually_exclusive_group(required=True)
    by.add_argument("--url", help="the server, e.g. http://127.0.0.1:8000")
    by.add_argument("--bundle", help="predict with this bundle here, with no server and no Ray (a bundle folder, or "
                                     "a run's output folder holding bundle/): a nightly batch")
    p.add_argument("--out", default=None,
                   help="write the rows plus predictions here (.csv/.parquet/.jsonl); default: CSV on stdout")
    p.add_argument("--token", default=None, help=f"bearer token (default: ${TOKEN_ENV})")
    p.add_argument("--overwrite", action="store_true", help="replace the --out file if it exists (default: refuse)")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="records per request (default: the server's limit)")
    p.add_argument("--allow-missing", action="store_true",
                   help="predict even when more than half of the model's features have no column in the file "
                        "(each imputed for every row; default: refuse, as a file meant for another model)")
    p.set_defaults(func=cmd_predict)


def _raw():
    import argparse
    return argparse.RawDescriptionHelpFormatter


def _positive(text: str) -> int:
    import argparse
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return int(text)


def _port(text: str) -> int:
    import argparse
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 0-65535 (0 picks a free one), got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    import argparse
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def serve_settings(bundle_path, spec_path=None, overrides=(), progress=print):
    """The ServeSpec for `trainyard serve`: bundle's spec.yaml → --spec → --set (SpecError lists problems).
    `progress` gets the line naming the bundle's settings that were not taken (serving.settings)."""
    from pydantic import ValidationError

    from jobs.bundle import resolve
    from jobs.spec import ServeSpec, SpecError, apply_overrides, load_serve_settings

    raw, ignored = bundle_serve_section(resolve(bundle_path))
    layers = [("the bundle's spec.yaml", copy.deepcopy(raw))]        # apply_overrides below changes `raw`
    if spec_path:
        # Only what --spec's serve section sets overrides the bundle's (was: its every default replaced the
        # bundle's required features, limits and unknown_fields without a word).
        given = load_serve_settings(spec_path)     # a job spec's serve section, or a file of `serve:` alone
        raw = overlay(raw, given)
        layers.append((str(spec_path), given))
    # `--set serve.port=1` and `--set port=1` mean the same here: only serve settings are in play.
    overrides = [o[len("serve."):] if o.startswith("serve.") else o for o in overrides]
    raw = apply_overrides(raw, overrides, source="--set")
    layers.append(("--set", {}))
    for item in overrides:
        layers[-1][1].setdefault(item.split("=", 1)[0].strip(), True)
    try:
        served = ServeSpec.model_validate(raw)
    except ValidationError as err:
        # A section --set alone gave in part, lacking what it requires (`--set log.keep=[site]`): an update
        # completes it from the running app's (`keep_running`); a first start says that it lacks them then.
        # (Not a section --set gave whole first: `--set log=null --set log.keep=[x]` starts a new one.)
        in_part = [e for e in err.errors() if e["type"] == "missing" and len(e["loc"]) > 1
                   and e["loc"][0] in KEPT_ON_UPDATE and _blame(layers, e["loc"][:1]) == "--set"
                   and e["loc"][0] not in layers[-1][1]]
        others = [e for e in err.errors() if e not in in_part]
        if others:
            raise SpecError([_explain(e, _blame(layers, e["loc"])) for e in others]) from None
        part = {e["loc"][0] for e in in_part}
        served = ServeSpec.model_validate({k: v for k, v in raw.items() if k not in part})
        served._given_in_part = {k: (raw[k], [_explain(e, "--set") for e in in_part if e["loc"][0] == k])
                                 for k in part}
    # A setting is said not taken only where what is served differs from the bundle's value: `--spec SPEC`
    # giving the same serve.log the bundle was trained with is not news; an env var of the operator's own in
    # place of the bundle's runtime_env is.
    chosen = {"serve": served.model_dump(mode="json")}
    line = not_taken_line([name for name, value in ignored.items() if value_at(chosen, name) != value])
    if line:
        progress(line)
    return served


def _blame(layers: list[tuple[str, dict]], loc: tuple) -> str:
    """Which of the settings' sources (the bundle's spec.yaml, --spec, --set) set something at, above or under
    the error's place: all three were named for every error (`--set autoscaling.min_replicas=5` blamed "the
    bundle's spec.yaml / fraud.yaml / --set"). A place inside a value (a list's item, a union's branch) is
    blamed on whoever set the value."""
    for n in range(len(loc), 0, -1):
        path = ".".join(str(p) for p in loc[:n])
        named, exact = [], []
        for source, tree in layers:
            if source == "--set":
                hit = any(f == path or f.startswith(path + ".") or path.startswith(f + ".") for f in tree)
                whole = path in tree
            else:
                node, hit = tree, True
                for key in path.split("."):
                    if not isinstance(node, dict) or key not in node:
                        hit = False
                        break
                    node = node[key]
                whole = hit and not isinstance(node, dict)
            named += [source] if hit else []
            exact += [source] if whole else []
        # A value set whole by several: the last one's is the one in force. A section: whoever set part of it.
        if exact or named:
            return exact[-1] if exact else " / ".join(named)
    return " / ".join(source for source, _ in layers)


def _explain(error: dict, source: str) -> str:
    from jobs.spec import ServeSpec, unknown_key_hint
    where = "serve." + ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{source}: {where}: unknown setting. Fix: {unknown_key_hint(ServeSpec, error['loc'])}"
    value = error.get("input")
    got = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{source}: {where}: {error['msg'].removeprefix('Value error, ')}{got}"


def exposure_notes(host: str, token: Optional[str], given: Optional[str]) -> list[str]:
    """What a security review found unsaid: a server on every interface without a token (anyone who reaches the
    machine can call it), and a token given on the command line (every local user can read it in `ps`)."""
    notes = []
    if host in ("0.0.0.0", "::") and token is None:
        notes.append(f"[serve] note: serving on {host} (every interface) without a token (unless an update keeps "
                     f"one): anyone who reaches this machine can call it; give --token or ${TOKEN_ENV}")
    if given is not None:
        notes.append(f"[serve] note: a --token on the command line is visible to every local user (ps); "
                     f"${TOKEN_ENV} is not")
    return notes


def cmd_serve(args, kit) -> int:
    from cluster.address import address_from
    from cluster.errors import TrainyardError
    from cluster.state import STATE_DIR_ENV
    from cluster.errors import EXIT_BAD_INPUT
    from serving.forever import serve_forever, served_elsewhere, serving_process
    from serving.settings import default_name
    from serving.ingress import check_port_free
    from serving.server import DEPLOY_TIMEOUT_S, load_bundle, resolve_token

    token = resolve_token(args.token, args.no_token)     # a refused token fails before connecting to Ray
    # It goes on as an argument, and leaves this process's environment: the embedded Ray started below copies that
    # into every process it starts, the replicas included (only a hash of the token is for them).
    os.environ.pop(TOKEN_ENV, None)
    bundle = load_bundle(args.bundle)                    # and so does a missing or damaged bundle
    spec = serve_settings(args.bundle, args.spec, args.set, kit.progress)
    for note in exposure_notes(args.host if args.host is not None else spec.host, token, args.token):
        kit.progress(note)
    port = args.port if args.port is not None else spec.port
    name = args.name or default_name(bundle)
    if note := older_version_note(bundle.path):
        kit.progress(note)
    if args.port is None and (elsewhere := served_elsewhere(name, port)):
        raise ServeError(f"{name} is served on port {elsewhere['port']} by trainyard process {elsewhere['pid']}; to "
                         f"update it, add --port {elsewhere['port']}; to serve a second {name} on port {port}, give "
                         f"--port {port}", exit_code=EXIT_BAD_INPUT)
    address = args.address
    if address is None and port:
        # Another `trainyard serve` on this port: join its Ray, where its Serve (and the app to update) lives.
        owner = serving_process(port, args.name)
        if owner and owner.get("address"):
            address = owner["address"]
            print(f"[serve] joining the Ray cluster of trainyard process {owner['pid']} serving on port {port}",
                  flush=True)
    if address is None and port and address_from(None).kind == "local":
        # The embedded Ray's Serve would listen here: a port another program holds is refused now, not after a
        # Ray start. (A cluster's Serve may hold its own port, so joined to one, `start_serve` checks it there.)
        try:
            check_port_free(args.host if args.host is not None else spec.host, port)
        except ServeError as exc:
            # A `trainyard serve` records itself in the state folder of where it was started (./.trainyard): one
            # started elsewhere is not found from here, and its port looks like any other program's.
            raise ServeError(f"{exc}. If a `trainyard serve` started in another folder holds it, run this command "
                             f"there (its record is in that folder's .trainyard/), or give both the same "
                             f"{STATE_DIR_ENV}", exit_code=exc.exit_code) from None
    args.address = address
    try:
        kit.connect(args)
    except TrainyardError:
        raise
    except Exception as exc:  # Ray's own, from deep inside ray.init: one line, not its traceback
        raise Failure(f"cannot connect to Ray: {exc}") from exc
    return serve_forever(args.bundle, spec=spec, name=args.name, host=args.host, port=args.port, token=token,
                         no_token=args.no_token, progress=kit.progress,
                         timeout_s=args.timeout if args.timeout is not None else DEPLOY_TIMEOUT_S,
                         breaking=args.breaking)


def older_version_note(path: Path) -> Optional[str]:
    """Serving a version other than the one its run's OUTPUT/bundle points to (a rollback): that the pointer
    still names the other, which `trainyard serve OUTPUT` (a restart) would serve. None otherwise."""
    from jobs.bundle import POINTER, VERSIONS

    path = Path(path).resolve()
    pointer = path.parent.parent / POINTER
    if path.parent.name != VERSIONS or not pointer.is_symlink():
        return None
    latest = pointer.resolve()
    if latest == path or not latest.is_dir():
        return None
    return (f"[serve] note: {pointer} points to version {latest.name}, not this {path.name}: `trainyard serve "
            f"{pointer.parent}` (a restart, a script) would serve {latest.name}; to make this one the latest: "
            f"ln -sfn {VERSIONS}/{path.name} {pointer}.new && mv -T {pointer}.new {pointer}")


def cmd_predict(args) -> int:
    """A ClientError carries its exit code: 2 when the server refused the rows (4xx), 1 otherwise; a rows file or
    --out that cannot be used is bad input (serving.tables.TableError, exit 2), found before any request."""
    from serving.client import Client, read_rows
    from serving.tables import check_out, image_files, image_table
    from serving.notes import absent_columns, imputed_note, out_of_range_note, truncated_note, unseen_note, unsaid_note

    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None)
    if args.out:
        check_out(args.out, overwrite=args.overwrite)
    if args.bundle:
        from serving.offline import BundleClient
        if args.token is not None:
            raise BadInput("--token is for a server (--url); --bundle predicts here, with no server to ask")
        client = BundleClient(args.bundle, batch_size=args.batch_size)
    else:
        client = Client(args.url, token=token, batch_size=args.batch_size)
    # Image files for an image model: the server's image field names their column (asked only then: a rows file
    # that cannot be used is refused before any request); otherwise read_table says what it reads.
    others: list[Path] = []
    images = image_files(Path(args.file), others)
    image_field = (client.schema().get("image") or {}).get("field") if images else None
    df = image_table(images, image_field) if image_field else read_rows(args.file, client)
    if image_field and others:
        print(f"note: {len(others)} file(s) under {args.file} are not images trainyard reads and were left out "
              f"(e.g. {others[0]})", file=sys.stderr)
    unreadable = _unreadable_images(df, image_field, client.schema()["image"], args.file, client.schema().get(
        "limits", {}).get("max_image_pixels")) if image_field else {}
    sent = df.drop(index=list(unreadable)) if unreadable else df
    # The server numbers records; for a folder of images the user knows files, named beside the numbers.
    predicted = client.predict_frame(sent, allow_missing=args.allow_missing,
                                     names=sent["file"].tolist() if image_field else None,
                                     progress=rows_progress(args.file))
    table = df.join(predicted, rsuffix="_predicted")      # an image not sent: its row, no prediction
    if unreadable and "record" in table.columns:
        table["record"] = table["record"].astype("Int64")   # the log's key stays a whole number (was 0.0, 1.0)
    if image := client.schema().get("image"):   # files: each row's `file` names its image; a table: its other
        # columns do. Neither is written the image's bytes again, nor the notes of table features (always empty).
        table = table.drop(columns=[image["field"], "out_of_range", "unseen_categories", "imputed"], errors="ignore")
    if unreadable:
        table["error"] = [unreadable.get(i, "") for i in table.index]
        first = next(iter(unreadable))
        print(f"note: {len(unreadable)} of {len(df)} image(s) under {args.file} cannot be decoded and were not sent; "
              f"their rows say why in column 'error' (e.g. {df['file'][first]}: {unreadable[first]})",
              file=sys.stderr)
    # After the predictions (check_columns has refused a file with no feature or a misspelt one): a feature
    # without a column is imputed for every row, which the user should see rather than find out.
    if absent := absent_columns([f["name"] for f in client.schema()["features"]], df.columns,
                                (client.schema().get("label") or {}).get("name")):
        print(f"note: {args.file} has {absent}", file=sys.stderr)
    if not client.says_row_notes():
        print(unsaid_note(args.url, args.file), file=sys.stderr)
    if note := out_of_range_note(predicted.attrs.get("out_of_range"), len(df), args.file):
        print(note, file=sys.stderr)
    if note := unseen_note(predicted.attrs.get("unseen_categories"), len(df), args.file, client.schema()["features"]):
        print(note, file=sys.stderr)
    if note := imputed_note(predicted.attrs.get("imputed"), predicted.attrs.get("imputed_in_every_record", []),
                            len(df), args.file, {f["name"] for f in client.schema()["features"]} - set(df.columns)):
        print(note, file=sys.stderr)
    if note := truncated_note(predicted.attrs.get("truncated"), len(df), args.file):
        print(note, file=sys.stderr)
    # Columns that are not features (ids) went unsent without a word, where no feature was absent to say them.
    schema = client.schema()
    sent_names = ({f["name"] for f in schema["features"]} | set(schema.get("limits", {}).get("log_keep") or ())
                  | {(schema.get("label") or {}).get("name")})
    if not image_field and not absent and (unsent := [str(c) for c in df.columns if c not in sent_names]):
        print(f"note: {len(unsent)} column(s) of {args.file} are not features of the model and were not "
              f"{'read' if args.bundle else 'sent'}: "
              f"{', '.join(map(repr, unsent[:8]))}{', ...' if len(unsent) > 8 else ''}"
              + (f" (they stay beside the predictions in {args.out})" if args.out else ""), file=sys.stderr)
    if decision := (client.schema().get("label") or {}).get("decision"):
        from jobs.decision import cut_text
        print(f"note: {decision['positive']!r} is predicted where {cut_text(decision)}, the bundle's cut-off",
              file=sys.stderr)
    if args.out:
        from serving.tables import write_table
        write_table(table, args.out, overwrite=args.overwrite)
        model = client.schema().get("model", {})
        print(f"{len(table) - len(unreadable)} predictions from {model.get('name')} {model.get('version')} written "
              f"to {args.out}" + (f", with {len(unreadable)} row(s) of images not sent" if unreadable else ""),
              file=sys.stderr)
    else:
        table.to_csv(sys.stdout, index=False)
    return 0


PROGRESS_EVERY_S = 10.0     # a line at most this often: a cron log of a night's run stays short


def rows_progress(given: str):
    """`progress(done, total)` for `Client.predict`: a line on stderr every PROGRESS_EVERY_S seconds of a long
    run and one at its end, with the rate and the time left. 2,000,000 rows took 7 minutes without a word, so
    that a stalled run and a slow one looked alike."""
    import time

    started = last = time.monotonic()
    first: Optional[tuple[float, int]] = None     # the first answer: the rate is of the answers after it

    def progress(done: int, total: int) -> None:
        nonlocal last, first
        now = time.monotonic()
        if first is None:       # before it, the rows were read and prepared: 13 s of 300,000, no request yet
            first = (now, done)
        if now - last < PROGRESS_EVERY_S and done < total or done == total and now - started < PROGRESS_EVERY_S:
            return              # (a short run: its summary line says enough)
        rate = (done - first[1]) / (now - first[0]) if done > first[1] else done / max(now - started, 1e-9)
        last = now
        left = f", about {(total - done) / rate:.0f} s left" if done < total else ""
        print(f"[predict] {done:,} of {total:,} rows of {given} predicted ({100 * done / total:.0f}%), "
              f"{now - started:.0f} s, {rate:,.0f} rows/s{left}", file=sys.stderr, flush=True)
    return progress


def _unreadable_images(df, field: str, image: dict, given: str, max_pixels: Optional[int] = None) -> dict:
    """{row: why} for the images of a folder that cannot be decoded as the server decodes them (its formats, its
    pixel limit, the model's size and channels): one truncated file among a camera's thousands refused the whole folder. Every
    one unreadable is bad input, said with the first few."""
    from jobs.images import DECODE_FORMATS, decode
    from serving.tables import TableError

    unreadable = {}
    for i, value in zip(df.index, df[field].tolist()):
        try:
            decode(value, tuple(image["size"]), image["channels"], formats=DECODE_FORMATS, max_pixels=max_pixels)
        except ValueError as exc:
            unreadable[i] = str(exc)
    if unreadable and len(unreadable) == len(df):
        raise TableError(f"{given}: none of its {len(df)} image(s) can be decoded: " + "; ".join(
            f"{df['file'][i]}: {why}" for i, why in list(unreadable.items())[:3]))
    return unreadable


__all__ = ["register", "serve_settings", "ServeError"]
