"""Cluster addresses and tokens. Imports no Ray (parsing an address or finding a token needs none; a test keeps
it so), and nothing of ours but the cluster state file and the error root.

An address is one of: local (none given), ``auto``, ``host:port`` (the GCS), ``ray://host:port`` (Ray Client)
or ``http(s)://host:port`` (a dashboard: the Jobs API). Token-auth clusters (Ray 2.60's ``ray start`` turns it
on) need the cluster's token. It is looked up, in this order, in RAY_AUTH_TOKEN, the file named by
RAY_AUTH_TOKEN_PATH, the token file of the cluster ``trainyard cluster up`` started (only when the address is that
cluster's), then ~/.ray/auth_token.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cluster import state as cluster_state
from cluster.errors import BadInput

TOKEN_ENV, TOKEN_PATH_ENV, AUTH_MODE_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
PROBE_TIMEOUT_S = 5.0

ADDRESS_HELP = ("use `auto`, host:port (the GCS, e.g. 10.0.0.5:6379), ray://host:10001 (Ray Client), "
                "or http://host:8265 (the dashboard, for `trainyard submit` / `trainyard jobs`)")
TOKEN_HELP = (f"set {TOKEN_ENV}=<token>, or {TOKEN_PATH_ENV}=<file holding it>, or put it in "
              f"{DEFAULT_TOKEN_FILE}; for a cluster from `trainyard cluster up`, `trainyard cluster status` "
              "prints its token file")


class ConnectError(BadInput):
    """The cluster at the address cannot be used: nothing answers there, it is not Ray, or it refuses our
    token. The message says which and what to check: the address or the token must change."""


@dataclass(frozen=True)
class Address:
    """A parsed cluster address. kind: local | auto | gcs | client | dashboard."""

    kind: str
    text: str
    host: str | None = None
    port: int | None = None

    @property
    def is_loopback(self) -> bool:
        if self.host in cluster_state.LOOPBACK_HOSTS:
            return True
        try:
            return ipaddress.ip_address(self.host or "").is_loopback
        except ValueError:  # a host name other than localhost: not known to be this machine
            return False


@dataclass(frozen=True)
class Token:
    value: str
    source: str                      # said in errors: where the token came from
    path: str | None = None          # the file it was read from, if any


def parse_address(text: str | None, *, origin: str = "--address") -> Address:
    """Classify an address string; ``origin`` (the flag or variable it came from) is named in errors."""
    if text is None or not text.strip() or text.strip() == "local":
        return Address("local", text or "")
    text = text.strip()
    if text == "auto":
        return Address("auto", text)
    for scheme, kind, default_port in (("ray://", "client", 10001), ("http://", "dashboard", 80),
                                       ("https://", "dashboard", 443)):
        if text.startswith(scheme):
            host, port = _split_host_port(text[len(scheme):], text, origin)
            return Address(kind, text.rstrip("/"), host, port or default_port)
    if "://" in text:
        raise ConnectError(f"{origin}={text!r}: unknown scheme; {ADDRESS_HELP}")
    host, port = _split_host_port(text, text, origin)
    if port is None:
        raise ConnectError(f"{origin}={text!r} has no port; {ADDRESS_HELP}")
    return Address("gcs", text, host, port)


def _split_host_port(hostport: str, text: str, origin: str) -> tuple[str, int | None]:
    hostport = hostport.split("/", 1)[0]
    if not hostport:
        raise ConnectError(f"{origin}={text!r} has no host; {ADDRESS_HELP}")
    host, sep, port = hostport.rpartition(":")
    if not sep or hostport.endswith("]"):
        return hostport.strip("[]"), None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConnectError(f"{origin}={text!r}: port {port!r} is not a number in 1-65535; {ADDRESS_HELP}")
    return host.strip("[]"), int(port)


def address_from(address: str | None) -> Address:
    """The address to use: the argument, else RAY_ADDRESS, else local."""
    if address:
        return parse_address(address, origin="--address")
    return parse_address(os.environ.get("RAY_ADDRESS"), origin="RAY_ADDRESS")


def find_token(address: Address | None = None, *, state_dir=None) -> Token | None:
    """The token to present to ``address``, or None. A token variable pointing at nothing is an error."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return Token(os.environ[TOKEN_ENV].strip(), f"the {TOKEN_ENV} environment variable")
    if os.environ.get(TOKEN_PATH_ENV):
        path = Path(os.environ[TOKEN_PATH_ENV]).expanduser()
        value = _read_token_file(path)
        if not value:
            raise ConnectError(
                f"{TOKEN_PATH_ENV}={os.environ[TOKEN_PATH_ENV]} names a missing or empty file; "
                f"point it at the cluster's token file, or unset it")
        return Token(value, f"{path} ({TOKEN_PATH_ENV})", str(path))
    local = local_cluster(address, state_dir)
    if local and local.get("token_path"):
        value = _read_token_file(Path(local["token_path"]))
        if value:
            return Token(value, f"{local['token_path']} (the token of `trainyard cluster up`'s cluster)",
                         local["token_path"])
    default = DEFAULT_TOKEN_FILE.expanduser()
    value = _read_token_file(default)
    if value:
        return Token(value, str(default), str(default))
    return None


def rejected_token(where: str, token: Token, address: Address | None, state_dir=None) -> ConnectError:
    """The cluster at `where` refused `token`. One from the environment wins over the token file `cluster up`
    saved: when that cluster is the one asked, the fix is to unset the variable, not to "set" it."""
    message = f"the cluster at {where} rejected the token from {token.source}: it is not this cluster's token. "
    # By the source `find_token` wrote: RAY_AUTH_TOKEN is a part of RAY_AUTH_TOKEN_PATH's name
    env = (TOKEN_PATH_ENV if token.source.endswith(f"({TOKEN_PATH_ENV})")
           else TOKEN_ENV if token.source == f"the {TOKEN_ENV} environment variable" else None)
    local = local_cluster(address, state_dir) if env else None
    if local and local.get("token_path") and _read_token_file(Path(local["token_path"])):
        return ConnectError(message + f"{env} wins over the token `trainyard cluster up` saved for this cluster "
                            f"({local['token_path']}): unset {env} to use that one")
    return ConnectError(message + TOKEN_HELP)


def _read_token_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def local_cluster(address: Address | None, state_dir=None) -> dict | None:
    """The state of the cluster `trainyard cluster up` started, if ``address`` is one of its endpoints."""
    try:
        state = cluster_state.read_state(state_dir)
    except cluster_state.StateError:
        return None
    if not state or address is None:
        return None
    if address.kind == "auto" or cluster_state.matches_address(state, address.host, address.port):
        return state
    return None
