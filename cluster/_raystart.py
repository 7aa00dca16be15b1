"""`ray start`, unchanged, except that a loopback address stays loopback.

Ray 2.60 rewrites 127.0.0.1/localhost in a bootstrap address (and in ``--node-ip-address``) to the machine's
outward IP (``ray._private.services.resolve_ip_for_localhost``). A GCS that listens on 127.0.0.1 only, as our
local clusters do, is then unreachable by its own worker nodes and by drivers, which dial the outward IP.
``keep_loopback()`` turns that rewrite off for loopback hosts only; every other host resolves exactly as
Ray does it.

Run as a script (``python cluster/_raystart.py start --head ...``) by ``cluster.local``: it must not need
the repository on ``sys.path``, so the one module of ours it uses, ``cluster.ray_compat`` (a leaf: it imports
nothing of ours), is then loaded from its file.
"""
from __future__ import annotations

import os
import sys

_LOOPBACK = {"127.0.0.1", "localhost"}


def _ray_compat():
    if __package__:
        from cluster import ray_compat
        return ray_compat
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "trainyard_ray_compat", os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_compat.py"))
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: dataclasses (and typing) look a class's module up there.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def keep_loopback() -> None:
    """Make Ray keep 127.0.0.1/localhost as the address instead of swapping in the outward IP. Idempotent."""
    services = _ray_compat().ray_services()

    original = services.resolve_ip_for_localhost
    if getattr(original, "_trainyard_keeps_loopback", False):
        return

    def resolve(host: str) -> str:
        return "127.0.0.1" if host in _LOOPBACK else original(host)

    resolve._trainyard_keeps_loopback = True  # type: ignore[attr-defined]
    services.resolve_ip_for_localhost = resolve


def main() -> None:
    # Run as a file, Python puts cluster/ first on sys.path, where our module names (local, commands, ...)
    # could shadow what Ray imports.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    keep_loopback()
    from ray.scripts.scripts import main as ray_cli

    sys.argv[0] = "ray"
    ray_cli()


if __name__ == "__main__":
    main()
