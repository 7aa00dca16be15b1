"""Serving latency and throughput: one bundle behind trainyard's Ray Serve app and behind a plain single-process
FastAPI + uvicorn app, side by side, under the same closed-loop HTTP load.

    .venv/bin/python benchmarks/serve_latency.py [--bundle runs/machine-failure] [--concurrency 1,16,64]
        [--duration 10] [--ingress haproxy,proxy] [--records 1]

The plain app does the same work per request as a trainyard replica (the same body checks, the same
`Bundle.predict`), one request at a time, in one uvicorn process: what a user would write without Ray. The
difference measured is what Serve adds (ingress, routing, replicas) and what batching saves.

Load: C keep-alive connections, each sending its next request as soon as the previous answer arrives (closed
loop), from a separate process speaking raw HTTP/1.1 on asyncio (a heavier client would eat the CPU the
servers are measured on). Every response is checked for status 200; an error fails the run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PLAIN_APP = '''
import json, sys
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from jobs.bundle import load
from serving.app import bundle_predict
from serving.schema import RequestChecker, RequestError

bundle = load(sys.argv[1])
checker = RequestChecker(bundle.schema, max_records=1000, max_body_bytes=8 * 2**20)
model = {"name": "plain", "version": bundle.version}
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    try:
        records = checker.parse(await request.body())
    except RequestError as exc:
        return JSONResponse(exc.to_json(), status_code=exc.status)
    out = bundle_predict(bundle, records)
    out["model"] = model
    return Response(json.dumps(out).encode(), media_type="application/json")

@app.get("/readyz")
async def readyz():
    return {"ready": True}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
'''


# ---------------------------------------------------------------------------------------------- load

async def _one_connection(host: str, port: int, path: str, bodies: list[bytes], stop_at: float,
                          latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    heads = [(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
    i = 0
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            t0 = clock()
            writer.write(heads[i % len(heads)])
            i += 1
            status_line = await reader.readline()
            length, chunked = 0, False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            else:
                await reader.readexactly(length)
            latencies.append(clock() - t0)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors.append(status_line.decode(errors="replace").strip())
    finally:
        writer.close()


async def _load(host, port, path, bodies, concurrency, duration, warmup):
    # Warm-up on the same connections' count, then the measured window.
    for window, keep in ((warmup, False), (duration, True)):
        latencies, errors = [], []
        start = time.perf_counter()
        await asyncio.gather(*(_one_connection(host, port, path, bodies, start + window, latencies, errors)
                               for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "seconds": elapsed, "errors": len(errors),
            "first_error": errors[0] if errors else None, "latencies": latencies}


def load_worker(args_json: str) -> None:
    """Entry of the load-generator process: prints one JSON line of results."""
    a = json.loads(args_json)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    bodies = [b.encode() for b in a["bodies"]]
    out = asyncio.run(_load(a["host"], a["port"], a["path"], bodies, a["concurrency"], a["duration"], a["warmup"]))
    lat = sorted(out.pop("latencies"))
    out["rps"] = out["requests"] / out["seconds"]
    out["p50_ms"] = 1000 * lat[len(lat) // 2] if lat else float("nan")
    out["p99_ms"] = 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
    out["mean_ms"] = 1000 * statistics.fmean(lat) if lat else float("nan")
    print(json.dumps(out), flush=True)


def run_load(url: str, bodies: list[str], concurrency: int, duration: float, warmup: float) -> dict:
    from urllib.parse import urlparse
    u = urlparse(url)
    spec = json.dumps({"host": u.hostname, "port": u.port, "path": (u.path.rstrip("/") or "") + "/predict",
                       "bodies": bodies, "concurrency": concurrency, "duration": duration, "warmup": warmup})
    proc = subprocess.run([sys.executable, __file__, "--load-worker", spec], capture_output=True, text=True,
                          timeout=duration + warmup + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(f"{result['errors']} request(s) failed against {url}, first: {result['first_error']}")
    return result


# ---------------------------------------------------------------------------------------------- servers

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, timeout: float = 120.0) -> None:
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready in {timeout:g}s")


class PlainServer:
    def __init__(self, bundle: Path):
        self.port = _free_port()
        self.file = Path(tempfile.mkdtemp(prefix="serve-bench-")) / "plain_app.py"
        self.file.write_text(PLAIN_APP)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(self.file), str(bundle), str(self.port)], env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        _wait_ready(self.url)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _records(bundle_path: Path, n: int) -> list[dict]:
    """Real rows for the request bodies: the bundle's own test split is not at hand, so generate telemetry
    like the example's and keep only the bundle's features."""
    sys.path.insert(0, str(ROOT / "examples"))
    from jobs.bundle import load
    from telemetry import generate
    names = [f["name"] for f in load(bundle_path).schema["features"]]
    df = generate(max(n, 1), seed=7)
    rows = df[[c for c in names if c in df.columns]].to_dict("records")
    # Missing readings are NaN in pandas and null on the wire.
    return [{k: (None if v != v else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()} for r in rows]


# ---------------------------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="runs/machine-failure", help="a bundle folder or a run's output folder")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2,
                    help="measurements per point, plain and trainyard alternating; the median is reported")
    ap.add_argument("--records", type=int, default=1, help="records per request")
    ap.add_argument("--ingress", default="haproxy,proxy", help="trainyard ingress variants to measure")
    ap.add_argument("--replicas", type=int, default=1, help="trainyard replicas (fixed: min = max)")
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs per trainyard replica")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--load-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.load_worker:
        load_worker(args.load_worker)
        return 0

    from jobs.bundle import resolve
    bundle = resolve(args.bundle)
    if not (bundle / "model.json").is_file():
        print(f"no bundle at {args.bundle}: make data && .venv/bin/trainyard train examples/machine-failure.yaml "
              "--set train.epochs=2", file=sys.stderr)
        return 2
    levels = [int(c) for c in args.concurrency.split(",")]
    pool = _records(bundle, 256 * args.records)
    bodies = [json.dumps({"records": pool[i:i + args.records]}) for i in range(0, len(pool), args.records)][:256]

    load_before = os.getloadavg()
    plain = PlainServer(bundle)
    runs: dict[str, dict[int, dict[str, list]]] = {}
    try:
        for ingress in [v for v in args.ingress.split(",") if v]:
            runs[ingress] = _measure_pairs(bundle, plain.url, ingress, levels, bodies, args)
    finally:
        plain.stop()
    _report(runs, levels, args, load_before, os.getloadavg())
    if args.json:
        Path(args.json).write_text(json.dumps({k: {str(c): v for c, v in r.items()} for k, r in runs.items()},
                                              indent=2))
    return 0


def _measure_pairs(bundle: Path, plain_url: str, ingress: str, levels: list[int], bodies: list[str],
                   args, settings: dict | None = None) -> dict[int, dict[str, list]]:
    """Start Ray and trainyard's app with this ingress (chosen when Serve starts, once per Ray cluster, hence a
    fresh process per variant), then measure plain and trainyard back to back, alternating which goes first,
    `rounds` times per concurrency: on a shared machine the load drifts, and only neighbours compare fairly.
    `settings`: more serve settings of trainyard's app (e.g. {"quantize": "int8"})."""
    spec_json = json.dumps({"ingress": ingress, "port": 0, "ray_actor_options": {"num_cpus": args.cpus},
                            "autoscaling": {"min_replicas": args.replicas, "max_replicas": args.replicas},
                            **(settings or {})})
    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
from cluster import connect
from cluster.quiet import quiet_ray_logs
quiet_ray_logs()
connect(num_cpus=4)
from jobs.spec import ServeSpec
from serving import deploy, shutdown
import benchmarks.serve_latency as bench
served = deploy({str(bundle)!r}, spec=ServeSpec.model_validate(json.loads({spec_json!r})), name="bench",
                progress=lambda *_: None)
out = {{}}
try:
    bodies = json.loads({json.dumps(bodies)!r})
    for c in {levels!r}:
        out[c] = {{"plain": [], "trainyard": []}}
        for r in range({args.rounds!r}):
            order = [("plain", {plain_url!r}), ("trainyard", served.url)]
            for label, url in (order if r % 2 == 0 else order[::-1]):
                out[c][label].append(bench.run_load(url, bodies, c, {args.duration!r}, {args.warmup!r}))
finally:
    shutdown()
print("RESULT " + json.dumps(out), flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                          timeout=3600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"trainyard Serve ({ingress}) run failed:\n{proc.stderr[-4000:]}")
    return {int(k): v for k, v in json.loads(lines[-1][len("RESULT "):]).items()}


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _report(runs: dict, levels: list[int], args, load_before, load_after) -> None:
    import platform
    print(f"\nserve latency: {args.records} record(s)/request, {args.duration:g}s per point, median of "
          f"{args.rounds} round(s), closed loop; {os.cpu_count()} CPUs ({platform.machine()}); trainyard: "
          f"{args.replicas} replica(s) x {args.cpus:g} CPU; load average before/after: "
          f"{load_before[0]:.1f} / {load_after[0]:.1f}\n")
    head = (f"{'server':<28}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'req/s vs plain':>16}{'p99 vs plain':>14}")
    print(head)
    print("-" * len(head))
    for c in levels:
        plain_all = [r for v in runs.values() for r in v[c]["plain"]]
        print(f"{'plain FastAPI':<28}{c:>5}{_median(plain_all, 'rps'):>9.0f}{_median(plain_all, 'p50_ms'):>9.1f}"
              f"{_median(plain_all, 'p99_ms'):>9.1f}{'1.00x':>16}{'1.00x':>14}")
        for ingress, v in runs.items():
            mine, theirs = v[c]["trainyard"], v[c]["plain"]       # ratios against the paired plain runs
            ratio = _median(mine, "rps") / _median(theirs, "rps")
            p99r = _median(mine, "p99_ms") / _median(theirs, "p99_ms")
            label = f"trainyard Serve ({ingress})"
            print(f"{label:<28}{c:>5}{_median(mine, 'rps'):>9.0f}{_median(mine, 'p50_ms'):>9.1f}"
                  f"{_median(mine, 'p99_ms'):>9.1f}{ratio:>15.2f}x{p99r:>13.2f}x")
        print()


if __name__ == "__main__":
    sys.exit(main())
