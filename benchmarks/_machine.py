"""What the benchmarks read of the machine itself (no torch, no Ray: the CLI benchmarks import it too)."""
from __future__ import annotations

import os


def busy_cpu_seconds() -> float:
    """CPU seconds every core of this machine has spent busy since boot (/proc/stat; 0 where there is none).
    Read around a command, it counts what the command and every process it started did (Ray's own processes are
    not its children once Ray daemonises them, so getrusage would miss them), and whatever else ran meanwhile:
    a figure for a machine otherwise idle. On a shared 2-core machine the wall time moves with the neighbours'
    load; the work done much less."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")   # all but idle and iowait
