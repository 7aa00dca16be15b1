"""One Serve replica: a bundle loaded once, behind a FastAPI app generated from the bundle's schema.

    POST /predict   {"records": [...]} → {"predictions", "probabilities" (classification), "model", "request_id",
                    "out_of_range" (only when a record holds a number well outside the train split's range)}
    GET  /healthz   the process answers          GET /readyz   the model is loaded and predicts
    GET  /schema    the bundle's input schema    GET /docs, /openapi.json   generated from that schema
    GET  /monitor   drift of this replica's recent traffic against the bundle's profile (serving/monitor.py)

Every prediction goes through `jobs.bundle.Bundle.predict`, the code path that evaluation used to write
metrics.json, so serving cannot drift from training. Records from concurrent requests are merged into one
`Bundle.predict` call by `@serve.batch` (one pandas/torch call per batch instead of one per request: that
per-call overhead, not the MLP, is what a small tabular model spends its time on).
"""
import asyncio
import concurrent.futures
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from cluster.errors import EXIT_BAD_INPUT
from jobs.decision import cut_text
from jobs.quantize import quantize
from jobs.spec import ServeSpec
from jobs.tabular import missing_fields, outside_range, training_ranges, unseen_categories
from serving.monitor import for_replica as replica_monitor
from serving.openapi import openapi_components
from serving.payload import bundle_payload, load_payload
from serving.predlog import PredictionLogger, new_request_id
from serving.body import drain, drain_limit, read_body, send_json
from serving.schema import RequestChecker, RequestError, body_too_large, non_finite_outputs, with_ranges
from serving.settings import TOKEN_ENV, ServeError, check_settings, default_name

OPEN_PATHS = frozenset({"/healthz", "/readyz"})   # probes answer without the token


def _records_in(batches: list) -> int:
    return sum(len(records) for records in batches)


def _decision_text(decision: Optional[dict]) -> str:
    """A binary classifier's cut-off (`jobs.decision`), for the OpenAPI description; "" without one."""
    return f" Predicts {decision['positive']!r} where {cut_text(decision)}." if decision else ""


def bundle_predict(bundle, records: list[dict]) -> dict:
    """`Bundle.predict`, except for a list of records that are all empty ({}): pandas builds no rows from
    those (DataFrame.from_records([{}]) has 0 rows), so they go to `Bundle.predict_frame` as a frame of that
    many rows with no columns, which imputes every feature, as a record with every feature null would."""
    if any(records):
        return bundle.predict(records, notes=False)         # the notes are the request's: said in /predict
    import pandas as pd
    out = bundle.predict_frame(pd.DataFrame(index=range(len(records))))
    out.pop("class_index", None)
    return out


class ModelServer:
    """The replica's state. `payload` is the bundle (its files' bytes, or a path every node can read) and
    `settings` the plain-dict serve settings made by `replica_settings`."""

    def __init__(self, payload: dict, settings: dict):
        self.settings = settings
        self.name = settings["name"]
        self.bundle = load_payload(payload)
        self.model_info = {"name": self.name, "version": self.bundle.version}
        self.ranges = training_ranges(self.bundle.preprocessor)
        self.cuts_text = hasattr(self.bundle.preprocessor, "cut_records")
        serve_spec = settings["serve"]
        self.quantized = serve_spec.get("quantize")
        self.bundle.model = quantize(self.bundle.model, self.quantized)
        self.checker = RequestChecker(
            self.bundle.schema, max_records=serve_spec["max_records"],
            max_body_bytes=int(serve_spec["max_body_mb"] * 2**20),
            required_features=serve_spec["required_features"], unknown_fields=serve_spec["unknown_fields"],
            keep=(serve_spec.get("log") or {}).get("keep") or ())
        # Decoding images is CPU work of up to ~0.2 s an image: it runs on these threads, not the event loop, so
        # other requests (and the health checks) go on meanwhile. Two at a time bound its memory.
        self.decoder = (concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
                        if self.checker.image else None)
        # A transformer encoder takes tens to hundreds of milliseconds a batch, where an MLP takes one: it runs on
        # this one thread (torch's own threads do the parallel work), so that the event loop meanwhile takes in
        # the requests that form the next batch, and the health probes answer.
        self.model_thread = (concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
                             if self.checker.text else None)
        self.body_timeout_s = float(serve_spec.get("body_timeout_s") or 30.0)    # (settings of an older trainyard)
        self.batch_max = serve_spec["batch"]["max_size"]
        self._predict_batch.set_max_batch_size(self.batch_max)
        self._predict_batch.set_batch_wait_timeout_s(serve_spec["batch"]["wait_ms"] / 1000.0)
        self.in_flight = 0
        # `direct_requests`: requests that went straight to the model (alone, or a whole batch by themselves).
        self.batching = {"batches": 0, "records": 0, "largest_batch_records": 0, "largest_batch_requests": 0,
                         "direct_requests": 0}
        # Tables: every feature missing exercises imputation and the 'unknown' slots. Images: a blank image.
        # Text: a word in each text field (they are required).
        image = self.bundle.schema.get("image")
        self.canary = ([{image["field"]: [[[0] * image["channels"]] * image["size"][1]] * image["size"][0]}]
                       if image else [{name: "ready" for name in self.checker.text}])
        self._canary_check()  # a bundle that cannot predict fails here, so the replica never takes traffic
        self.ready = True
        log = serve_spec.get("log")
        self.predlog = (PredictionLogger(log, app=self.name, replica=serve.get_replica_context().replica_tag,
                                         schema=self.bundle.schema, version=self.bundle.version) if log else None)
        self.monitor = replica_monitor(self.bundle, settings, payload, serve.get_replica_context().replica_tag)

    # ------------------------------------------------------------------------------------------ model
    def _canary_check(self) -> None:
        out = bundle_predict(self.bundle, self.canary)
        if len(out["predictions"]) != 1:
            raise RuntimeError(f"canary prediction returned {len(out['predictions'])} predictions for 1 record")

    async def check_health(self):
        """Serve calls this every health_check_period_s; raising marks the replica unhealthy (replaced)."""
        try:
            self._canary_check()
        except Exception as exc:
            self.ready = False
            raise RuntimeError(f"the model of {self.name} no longer predicts: {exc}") from exc
        self.ready = True

    def __del__(self):
        """Serve calls this when it stops the replica gracefully (an update, a scale-down, shutdown): the
        prediction log writes what it holds before the process goes."""
        if getattr(self, "predlog", None) is not None:
            self.predlog.close()
        if getattr(self, "monitor", None) is not None:
            self.monitor.close()

    async def _predict_now(self, records: list[dict]) -> dict:
        if self.model_thread is None:
            return bundle_predict(self.bundle, records)
        return await asyncio.get_running_loop().run_in_executor(self.model_thread, bundle_predict, self.bundle,
                                                                records)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005, batch_size_fn=_records_in)
    async def _predict_batch(self, batches: list[list[dict]]) -> list[dict]:
        # The model runs on the replica's event loop (a batch of a small MLP takes about a millisecond, less
        # than a hop to a thread would cost; batches run one at a time anyway), a text model on its thread.
        flat = [r for records in batches for r in records]
        stats = self.batching
        stats["batches"] += 1
        stats["records"] += len(flat)
        stats["largest_batch_records"] = max(stats["largest_batch_records"], len(flat))
        stats["largest_batch_requests"] = max(stats["largest_batch_requests"], len(batches))
        try:
            out = await self._predict_now(flat)
        except Exception:
            if len(batches) == 1:
                raise
            # Checked records should never fail; if one does, fail only its own request, not its batch-mates.
            return [await self._predict_or_error(records) for records in batches]
        results, start = [], 0
        preds, probs = out["predictions"], out.get("probabilities")
        for records in batches:
            end = start + len(records)
            item = {"predictions": preds[start:end]}
            if probs is not None:
                item["probabilities"] = probs[start:end]
            results.append(item)
            start = end
        return results

    async def _predict_or_error(self, records: list[dict]) -> Any:
        try:
            return await self._predict_now(records)
        except Exception as exc:
            return exc

    async def predict(self, records: list[dict]) -> dict:
        # Straight to the model, skipping the batch wait, when waiting cannot help: a request as big as a whole
        # batch (it would not fit in one anyway), or no other /predict request in this replica to share a batch
        # with (a lone client would otherwise pay wait_ms on every call). A request runs from the door (Guard,
        # which counts `in_flight`) to here without ever suspending, so the requests that arrived meanwhile
        # have not been counted yet: yield once to let them in, then look.
        if len(records) < self.batch_max:
            await asyncio.sleep(0)
        if len(records) >= self.batch_max or self.in_flight <= 1:
            self.batching["direct_requests"] += 1
            out = await self._predict_now(records)
        else:
            out = await self._predict_batch(records)
        if isinstance(out, Exception):
            raise out
        out["model"] = self.model_info
        return out

    # ------------------------------------------------------------------------------------------ HTTP
    def __serve_build_asgi_app__(self):
        """Called by Serve on the replica after __init__: the app is generated from the loaded bundle."""
        app = build_fastapi(self)
        return Guard(app, server=self, token_sha256=self.settings.get("token_sha256"),
                     max_body_bytes=self.checker.max_body_bytes)


def build_fastapi(server: ModelServer) -> FastAPI:
    # Not `from __future__ import annotations` in this module: FastAPI reads `request: Request` at runtime.
    bundle, checker = server.bundle, server.checker
    schema = bundle.schema
    features = ", ".join(f["name"] for f in schema["features"])
    app = FastAPI(
        title=f"trainyard: {server.name}", version=bundle.version,
        description=(f"{schema['task'].capitalize()} of `{schema['label']['name']}` from {len(schema['features'])} "
                     f"features ({features}). Send records to POST /predict; GET /schema lists the features."
                     + _decision_text(schema["label"].get("decision"))),
        docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
    components = openapi_components(checker, schema["task"], schema["label"].get("classes"))

    def custom_openapi():
        # FastAPI builds the spec from route signatures; the request/response schemas come from the bundle, so
        # they are added here once and cached like FastAPI's own.
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(components)
            if server.settings.get("token_sha256"):
                spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                spec["security"] = [{"bearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = custom_openapi
    error_responses = {code: {"description": desc, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
        for code, desc in ((400, "The body is not JSON, or nests too deeply to parse."),
                           (401, "Missing or wrong bearer token."),
                           (413, "Body over serve.max_body_mb, or more than serve.max_records records."),
                           (422, "Records that do not fit the schema, or whose prediction is not a finite number; "
                                 "each problem names the record (and the field)."))}

    @app.exception_handler(RequestError)
    async def _client_error(_request, exc: RequestError):
        # json.dumps escapes what it cannot encode (a field name that is a lone surrogate); JSONResponse's UTF-8
        # rendering would fail on it and turn a 422 into a 500.
        return Response(json.dumps(exc.to_json()).encode(), status_code=exc.status, media_type="application/json",
                        headers={"connection": "close"} if exc.close_connection else None)

    @app.post("/predict", summary="Predict for a list of records", responses={
        200: {"description": "One prediction per record, in order.", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/PredictResponse"}}}}, **error_responses},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/PredictRequest"}}}}})
    async def predict(request: Request):
        body = await read_body(request, checker.max_body_bytes, server.body_timeout_s)
        if server.decoder is None:
            records = checker.parse(body)
        else:
            records = await asyncio.get_running_loop().run_in_executor(server.decoder, checker.parse, body)
        out = await server.predict(checker.without_kept(records))
        out["request_id"] = request_id = new_request_id()
        if outside := outside_range(server.ranges, records):      # said, not refused: the model still answers
            out["out_of_range"] = outside
        if not checker.reject_unknown_categories and (unseen := unseen_categories(checker.known, records)):
            out["unseen_categories"] = unseen
        every, imputed = missing_fields(checker.imputable, records, blank=checker.blank_text)
        if every:
            out["imputed_in_every_record"] = every
        if imputed:
            out["imputed"] = imputed
        # Off the event loop: a long text is tokenized again whole (1.2 s a megabyte).
        if server.cuts_text and (cut := await asyncio.to_thread(server.bundle.preprocessor.cut_records, records)):
            out["truncated"] = cut          # text past max_length tokens: the model read its beginning alone
        # Serialised by hand: FastAPI's jsonable_encoder walks every float, which costs more than the model.
        try:
            data = json.dumps(out, allow_nan=False).encode()
        except ValueError:
            raise non_finite_outputs(out, records) from None
        server.monitor.observe(records, out["predictions"], out.get("probabilities"))
        if server.predlog is not None:
            server.predlog.log(request_id, records, out["predictions"], out.get("probabilities"))
        return Response(data, media_type="application/json")

    @app.get("/healthz", summary="The replica process answers")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and predicts", responses={503: {"description": "Not ready."}})
    async def readyz():
        # `batching` counts this replica's merged model calls (how much @serve.batch is saving), and the requests
        # that had no one to share a call with (`direct_requests`: a lone client's, or a batch's worth alone).
        body = {"ready": server.ready, "model": server.model_info, "quantize": server.quantized,
                "batching": server.batching,
                **({"logging": server.predlog.stats} if server.predlog is not None else {})}
        return JSONResponse(body, status_code=200 if server.ready else 503)

    @app.get("/monitor", summary="Drift of this replica's recent inputs and predictions against the training data")
    async def monitor():
        # Off the event loop: folding what arrived and the statistics take the monitor's lock and scipy's time.
        return await asyncio.to_thread(server.monitor.snapshot)

    serve_spec = server.settings["serve"]
    # Where clients read the features: the ones this server requires (serve.required_features; images and text
    # the model requires itself), and each number's training range (a bundle's schema.json from before
    # `trained_on` gets it from the preprocessor's statistics, which the out_of_range notes use).
    asked = serve_spec.get("required_features") or []
    said = {"required": True, "missing": "refused: this server requires it (serve.required_features)"}
    by_server = {name for name in checker.required if asked == "all" or name in asked}
    schema_doc = {"model": server.model_info, **schema,
                  "features": [{**f, **(said if f["name"] in by_server else {})}
                               for f in with_ranges(schema["features"], server.ranges)],
                  "limits": {"max_records": serve_spec["max_records"], "max_body_mb": serve_spec["max_body_mb"],
                             "required_features": checker.required,
                             "unknown_fields": serve_spec["unknown_fields"], "log_keep": sorted(checker.keep),
                             "quantize": server.quantized,
                             **({"max_image_pixels": checker.max_image_pixels} if checker.image else {})},
                  "metrics": bundle.metrics.get("test", {})}

    @app.get("/schema", summary="The bundle's input schema: features, types, categories, label")
    async def get_schema():
        return schema_doc

    @app.get("/", include_in_schema=False)
    async def index():
        return {"model": server.model_info, "predict": "POST /predict {\"records\": [{...}]}",
                "endpoints": ["/predict", "/schema", "/monitor", "/healthz", "/readyz", "/docs",
                              "/openapi.json"]}

    return app


class Guard:
    """Checks that cost nothing to do before FastAPI sees a request: the bearer token, and a declared
    Content-Length over the limit (answered 413 without reading the body). A plain ASGI wrapper rather than
    Starlette middleware, which would add a task and a copy per request."""

    def __init__(self, app, *, server: Optional[ModelServer] = None, token_sha256: Optional[str] = None,
                 max_body_bytes: int):
        self.app = app
        self.server = server
        self.token_sha256 = token_sha256
        self.max_body_bytes = max_body_bytes

    # Serve reads these off the ASGI app it is given.
    def add_exception_handler(self, *args, **kwargs):
        return self.app.add_exception_handler(*args, **kwargs)

    @property
    def docs_url(self):
        return self.app.docs_url

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):] or "/"
            if self.token_sha256 and path not in OPEN_PATHS and not self._authorized(scope):
                await send_json(send, 401, {"detail": "missing or wrong bearer token: send the header "
                                                       "'Authorization: Bearer <token>' (the server's --token / "
                                                       "TRAINYARD_SERVE_TOKEN)"},
                                 [(b"www-authenticate", b"Bearer")])
                return
            if scope.get("method") not in ("GET", "HEAD") and (kind := _browser_form(scope["headers"])) is not None:
                await send_json(send, 415, {"detail": f"a browser's post of Content-Type {kind!r} is refused: send "
                                                       "JSON with 'Content-Type: application/json' (a web page's "
                                                       "form could otherwise post to this server from any site)"})
                return
            for key, value in scope["headers"]:
                if key == b"content-length":
                    try:
                        size = int(value)
                    except ValueError:
                        await send_json(send, 400, {"detail": f"bad Content-Length header {value[:20]!r}"})
                        return
                    if size > self.max_body_bytes:
                        drained = size <= drain_limit(self.max_body_bytes) and await drain(receive)
                        message = body_too_large(size, self.max_body_bytes)
                        await send_json(send, 413, {"detail": message, "errors": [{"message": message}]},
                                         [] if drained else [(b"connection", b"close")])
                        return
                    break
            if path == "/predict" and self.server is not None:
                self.server.in_flight += 1
                try:
                    await self.app(scope, receive, send)
                finally:
                    self.server.in_flight -= 1
                return
        await self.app(scope, receive, send)

    def _authorized(self, scope) -> bool:
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer":
                    return False
                digest = hashlib.sha256(token.strip().encode()).hexdigest()
                return hmac.compare_digest(digest, self.token_sha256)
        return False


def _browser_form(headers) -> Optional[str]:
    """The Content-Type of a browser's post that is not JSON, else None. A page on any site may post a form, or
    text with fetch's no-cors, to 127.0.0.1 without the browser asking first: into a server without a token, and
    into its prediction log, which `trainyard monitor` reads. A browser says where its request came from (Origin,
    Sec-Fetch-Site); curl and scripts send neither, and keep being answered whatever their Content-Type. (Not
    Sec-Fetch-Mode: Node's fetch sends it, with text/plain for a string body and no Origin.)"""
    named = {key: value for key, value in headers if key in (b"origin", b"sec-fetch-site", b"content-type")}
    kind = named.get(b"content-type", b"").split(b";")[0].strip().lower().decode("latin-1")
    browser = b"origin" in named or b"sec-fetch-site" in named
    return kind or "none" if browser and not (kind == "application/json" or kind.endswith("+json")) else None


def build_app(args: dict):
    """Serve application builder for config files: `import_path: serving.app:build_app` with
    `args: {bundle: PATH, name: NAME, <serve settings, e.g. max_records: 500>}` (KubeRay's RayService,
    `serve deploy`). The bundle path must be readable where Serve builds the app; the token, if any, comes
    from TRAINYARD_SERVE_TOKEN there. Deployment options in the config file override the settings."""
    from jobs.bundle import load, resolve

    args = dict(args or {})
    if "bundle" not in args:
        raise ServeError("serving.app:build_app needs args: {bundle: /path/to/OUTPUT/bundle}",
                         exit_code=EXIT_BAD_INPUT)
    source = args.pop("bundle")
    path = resolve(source)
    bundle = load(path)
    name = args.pop("name", None) or default_name(bundle)
    serve_spec = ServeSpec.model_validate(args)
    check_settings(bundle, serve_spec)
    return application(path, serve_spec, name, os.environ.get(TOKEN_ENV) or None, source=str(source))


# The Serve deployment: `serve.ingress()` without an app defers the app to __serve_build_asgi_app__, so the
# app is built on the replica from the bundle it loaded (nothing schema-dependent is pickled from the driver).
ModelDeployment = serve.deployment(name="model")(serve.ingress()(ModelServer))


# ---------------------------------------------------------------------------------------------- construction
def replica_settings(name: str, serve_spec: ServeSpec, token: Optional[str],
                     token_sha256: Optional[str] = None) -> dict:
    # Only the token's hash reaches the replicas (and the controller's checkpoint that stores their arguments).
    # `token_sha256` without `token`: keep the hash of the version being updated (serving.server.deploy).
    return {"name": name, "serve": serve_spec.model_dump(mode="json"),
            "token_sha256": hashlib.sha256(token.encode()).hexdigest() if token else token_sha256}


def application(path: Path, serve_spec: ServeSpec, name: str, token: Optional[str],
                env_vars: Optional[dict] = None, token_sha256: Optional[str] = None, source: Optional[str] = None):
    """The Serve application (not yet running) for the bundle folder `path` (fetched from `source` when that is
    a URI) under these settings."""
    actor_options = dict(serve_spec.ray_actor_options)
    runtime_env = dict(actor_options.get("runtime_env") or {})
    if env_vars:
        runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env_vars}
    if runtime_env:
        actor_options["runtime_env"] = runtime_env
    a = serve_spec.autoscaling
    return ModelDeployment.options(
        autoscaling_config={"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                            # scale-to-zero still starts with one replica, so the deploy can be checked
                            "initial_replicas": 1 if a.min_replicas == 0 else None,
                            "target_ongoing_requests": a.target_ongoing_requests,
                            "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s,
                            "look_back_period_s": a.look_back_period_s, "metrics_interval_s": a.metrics_interval_s},
        max_ongoing_requests=serve_spec.max_ongoing_requests,
        ray_actor_options=actor_options,
        health_check_period_s=serve_spec.health_check_period_s,
        health_check_timeout_s=serve_spec.health_check_timeout_s,
        max_surge_percent=serve_spec.max_surge_percent,
        # A bundle that cannot load will not load on the 4th try either; fail the deploy in seconds, not minutes.
        max_constructor_retry_count=3,
    ).bind(bundle_payload(path, source), replica_settings(name, serve_spec, token, token_sha256))
