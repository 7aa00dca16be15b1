"""`python -m trainyard ...`: the console script without installing it (a Ray job's entrypoint uses this)."""
import sys

from trainyard.cli import run

sys.exit(run())
