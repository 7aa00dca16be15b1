"""What watching a served model costs: throughput and p99 of one bundle served with live monitoring and
prediction logging off, with monitoring on, and with both on, side by side in one Ray Serve, under the same
closed-loop HTTP load (benchmarks/serve_latency.py's load generator).

    .venv/bin/python benchmarks/serve_monitor_cost.py [--bundle runs/machine-failure] [--concurrency 16]
        [--duration 10] [--rounds 3] [--records 1]

Three apps of the same bundle, one replica of --cpus CPUs each, the same ingress: `off` (serve.monitor.enabled:
false, no serve.log), `monitor` (the default: serve.monitor on) and `monitor+log` (serve.log to a temporary
folder, every request, a new file every 5 s). Each round measures the three back to back, in a rotating order (on a shared machine
the load drifts, and only neighbours compare fairly); medians over the rounds, ratios against `off`, and the
median of each round's own ratio to that round's `off` (paired: what load drift between rounds cancels). At the
end the `monitor+log` app's GET /monitor and /readyz show that both really ran (rows counted, files written,
records dropped). Without --bundle a small machine-failure bundle is trained first (not timed). The goal
(issue 20): <= 10% cost in throughput and p99 at 16 clients.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ("off", "monitor", "monitor+log")


def app_name(variant: str) -> str:
    return "cost-" + variant.replace("+", "-")


def settings_of(variant: str, log_dir: Path, cpus: float) -> dict:
    """The serve settings of one variant (all else the defaults)."""
    out = {"port": 0, "route_prefix": f"/{app_name(variant)}", "ray_actor_options": {"num_cpus": cpus},
           "autoscaling": {"min_replicas": 1, "max_replicas": 1},
           "monitor": {"enabled": variant != "off"}}
    if variant == "monitor+log":
        # Files published every 5 s rather than the default 300 s: each measured point writes and renames some
        # (the default would leave the whole run in one open file, its encoding never measured).
        out["log"] = {"path": str(log_dir), "rotate_s": 5}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None, help="a machine-failure bundle with profile.json (default: train "
                                                   "a small one)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=1, help="records per request")
    ap.add_argument("--cpus", type=float, default=1.0, help="CPUs per replica")
    args = ap.parse_args(argv)

    import benchmarks.serve_latency as bench
    from cluster import connect
    from cluster.quiet import quiet_ray_logs
    from jobs.bundle import load, resolve
    from jobs.spec import ServeSpec
    from serving import deploy, shutdown

    work = Path(tempfile.mkdtemp(prefix="serve-monitor-cost-"))
    quiet_ray_logs()
    connect(num_cpus=4)
    try:
        if args.bundle:
            bundle = resolve(args.bundle)
        else:
            from benchmarks.monitor_throughput import train_bundle
            bundle = train_bundle(work)
        if load(bundle).profile is None:
            print(f"{bundle} has no profile.json (exported before trainyard wrote one): retrain it", file=sys.stderr)
            return 2
        pool = bench._records(bundle, 256 * args.records)
        bodies = [json.dumps({"records": pool[i:i + args.records]})
                  for i in range(0, len(pool), args.records)][:256]
        load_before = os.getloadavg()
        served = {v: deploy(bundle, spec=ServeSpec.model_validate(settings_of(v, work / "logs", args.cpus)),
                            name=app_name(v), progress=lambda *_: None) for v in VARIANTS}
        runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS[r % 3:] + VARIANTS[:r % 3]
            for v in order:
                runs[v].append(bench.run_load(served[v].url, bodies, args.concurrency, args.duration, args.warmup))
        url = served["monitor+log"].url
        watched = {path: json.loads(urllib.request.urlopen(f"{url}/{path}", timeout=30).read())
                   for path in ("monitor", "readyz")}
        _report(runs, args, bundle, load_before, os.getloadavg(), watched, work / "logs")
        for s in served.values():
            shutdown(s.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _report(runs: dict, args, bundle: Path, load_before, load_after, watched: dict, logs: Path) -> None:
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")} for v, rs in runs.items()}
    print(f"\nserve monitoring cost: bundle {bundle}, {args.records} record(s)/request, {args.concurrency} clients, "
          f"{args.duration:g}s per point, median of {args.rounds} rounds, closed loop; {os.cpu_count()} CPUs "
          f"({platform.machine()}); 1 replica x {args.cpus:g} CPU per app; load average before/after: "
          f"{load_before[0]:.1f} / {load_after[0]:.1f}\n")
    head = (f"{'variant':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'req/s vs off':>14}{'p99 vs off':>12}"
            f"{'paired':>16}   rounds: req/s, p99 ms")
    print(head)
    print("-" * len(head))
    for v in VARIANTS:
        m = med[v]
        paired = {k: statistics.median(r[k] / o[k] for r, o in zip(runs[v], runs["off"])) for k in ("rps", "p99_ms")}
        print(f"{v:<14}{m['rps']:>9.0f}{m['p50_ms']:>9.1f}{m['p99_ms']:>9.1f}{m['rps'] / med['off']['rps']:>13.2f}x"
              f"{m['p99_ms'] / med['off']['p99_ms']:>11.2f}x  {paired['rps']:.2f}x / {paired['p99_ms']:.2f}x   "
              f"{[round(r['rps']) for r in runs[v]]}, {[round(r['p99_ms'], 1) for r in runs[v]]}")
    mon, ready = watched["monitor"], watched["readyz"]
    files = sorted(logs.rglob("*.parquet"))
    print(f"\nmonitor+log app: /monitor counted {mon.get('n')} rows in its window (skipped {mon.get('skipped')}), "
          f"flagged {mon.get('flagged')}, monitoring thread CPU {mon.get('cost')}; logging {ready.get('logging')}; "
          f"{len(files)} Parquet file(s) so far")


if __name__ == "__main__":
    sys.exit(main())
