"""`trainyard tune SPEC [--resume] [--set FIELD=VALUE] [--address ADDR]`."""
from __future__ import annotations

import argparse

from cluster.errors import BadInput


def register(subparsers, kit) -> None:
    """Add `tune`; `kit` is the composition root's shared pieces (options, spec loading, connect, progress)."""

    def cmd_tune(args) -> int:
        from tuning import run_tune

        spec = kit.load_spec(args)
        if spec.tune is None:
            raise BadInput(f"{args.spec} has no `tune` section, so there is nothing to search; add one (e.g. "
                           "tune: {samples: 8, lr: {loguniform: [1.0e-4, 1.0e-1]}}) or use `trainyard train`")
        # Refused in seconds, before Ray starts (run_tune checks the search again), --resume with nothing to resume too.
        kit.check_before_ray(spec, resume=args.resume)
        from tuning import SEARCH_IMPORTS
        kit.connect(args, spec, imports=SEARCH_IMPORTS)
        path, _ = run_tune(spec, resume=args.resume, progress=kit.progress, resume_command=kit.resume_command(args))
        from cluster.jobs_api import BUNDLE_WRITTEN
        print(f"{BUNDLE_WRITTEN}{path}", flush=True)
        return 0

    p = subparsers.add_parser(
        "tune", help="hyperparameter search (Ray Tune + ASHA); the best trial becomes the bundle",
        description="Search the spec's `tune` section: every trial is a full Ray Train run, ASHA stops the bad "
                    "ones, the best is evaluated on the test split and written to OUTPUT/bundle, with "
                    "OUTPUT/tune/results.csv and report.png. Interrupted (Ctrl-C, a killed driver)? "
                    "Run the same command with --resume: finished trials are not run again.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="the job spec (YAML) with a `tune` section")
    p.add_argument("--resume", action="store_true", help="continue the newest interrupted experiment of this spec")
    kit.add_common(p, spec=False)
    p.set_defaults(func=cmd_tune)
