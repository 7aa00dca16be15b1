"""Ray's log output, set up once for a trainyard driver: the CLI, the tests and the benchmarks call this."""
from __future__ import annotations

import logging


def quiet_ray_logs() -> None:
    """Keep our own progress lines readable: Ray Data's per-dataset banners and progress bars, and Train/Tune/
    Serve INFO lines, go to Ray's log files only. Warnings and errors still show."""
    try:
        import ray.data  # configures its loggers on import: quiet them after, not before
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except Exception:  # a Ray without these knobs is only noisier
        pass
    for name in ("ray.data", "ray.train", "ray.tune", "ray.serve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Progress bars disabled": we turned them off above, on purpose.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
