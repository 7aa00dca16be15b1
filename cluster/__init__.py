"""Where trainyard's work runs: embedded local Ray by default, or an existing cluster.

Imports nothing of ours (jobs, tuning and serving depend on this package, never the reverse).
"""
from cluster.connect import ConnectionError_, connect, describe_resources

__all__ = ["connect", "describe_resources", "ConnectionError_"]
