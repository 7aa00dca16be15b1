"""The dashboard's HTTP side of a cluster: its URL for an address (``dashboard_url``) and an authenticated Ray Jobs API
client (``job_client``), for `trainyard submit` and `trainyard jobs`; ``authorize``, the token check
``cluster.connection.preflight`` makes of a dashboard URL. Addresses and tokens: ``cluster.address``.

The token goes only where the user pointed: no HTTP request that carries it (the probes here, the Jobs API
client's) follows a redirect; a redirect is an error naming where it led. Sending it over plain ``http://`` to
an address that is not this machine prints a warning first: anyone on the way can read it.
"""
from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.request

from cluster import quiet, ray_compat
from cluster import state as cluster_state
from cluster.address import (PROBE_TIMEOUT_S, TOKEN_HELP, ConnectError, Token, find_token, parse_address,
                             rejected_token)


def dashboard_url(address: str | None = None, *, state_dir=None) -> str:
    """The Jobs API URL for ``address``: an http(s) URL as given; otherwise (no address, ``auto``, or the
    GCS/Ray Client address of the cluster `trainyard cluster up` started) that cluster's dashboard."""
    text = address or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    origin = "--address" if address else "RAY_API_SERVER_ADDRESS/RAY_ADDRESS"
    parsed = parse_address(text, origin=origin)
    if parsed.kind == "dashboard":
        return parsed.text
    local = cluster_state.read_state(state_dir)
    if local and (parsed.kind in ("local", "auto")
                  or cluster_state.matches_address(local, parsed.host, parsed.port)):
        return local["dashboard_url"]
    if parsed.kind == "local":
        raise ConnectError(
            "no cluster to talk to: pass --address http://<head>:8265 (the dashboard), set RAY_ADDRESS to it, "
            "or start a local one with `trainyard cluster up` "
            f"(none recorded in {cluster_state.state_path(state_dir)}; {cluster_state.elsewhere_hint()})")
    raise ConnectError(
        f"{origin}={parsed.text!r}: the Jobs API needs the dashboard URL, e.g. http://<head>:8265, "
        f"not a {'Ray Client' if parsed.kind == 'client' else 'GCS'} address")


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib otherwise follows a redirect with every header of the request, Authorization included, to any
    host; refused, the redirect reaches the caller as an HTTPError with its 3xx code."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_RefuseRedirects)


def _redirect_error(url: str, code: int, location: str | None) -> ConnectError:
    return ConnectError(
        f"{url} answered with a redirect (HTTP {code} to {location or '?'}); trainyard sends the cluster token "
        "only to the address you give and follows no redirect with it. If that is the cluster's dashboard, "
        "pass it as --address (or RAY_ADDRESS)")


_warned_plain_http: set[str] = set()


def _warn_plain_http(url: str) -> None:
    """Say, once per URL and before the token is sent, that plain http:// to another machine exposes it."""
    parsed = parse_address(url)
    if not url.startswith("http://") or parsed.is_loopback or url in _warned_plain_http:
        return
    _warned_plain_http.add(url)
    print(f"trainyard: warning: sending the cluster token to {url} over plain http://: anyone on the network "
          "path can read it and use the cluster. Prefer https://, or a tunnel to the head "
          f"(ssh -L 8265:127.0.0.1:{parsed.port} HEAD, then --address http://127.0.0.1:8265)",
          file=sys.stderr, flush=True)


def _auth_mode(url: str) -> str:
    """The dashboard's authentication mode (a public endpoint), or 'unknown' for dashboards without it."""
    try:
        with _opener.open(f"{url}/api/authentication_mode", timeout=PROBE_TIMEOUT_S) as resp:
            return json.loads(resp.read().decode()).get("authentication_mode", "unknown")
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise _redirect_error(url, exc.code, exc.headers.get("Location")) from None
        return "unknown"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectError(
            f"nothing answers at {url} ({reason}): wrong address, or the cluster is down. The dashboard "
            "listens on 8265 by default; `trainyard cluster status` prints a local cluster's URL") from None
    except ValueError:
        raise ConnectError(f"{url} answers but is not a Ray dashboard (no JSON at /api/authentication_mode)")
    except http.client.HTTPException as exc:      # BadStatusLine: a port that does not speak HTTP (was a traceback)
        raise _not_http(url, exc) from None


def _not_http(url: str, exc: Exception) -> ConnectError:
    return ConnectError(f"{url} answers, but not in HTTP ({type(exc).__name__}): the port of Ray's GCS (6379) or "
                        "Ray Client (10001), not its dashboard's, or an https:// endpoint written as http://. Give "
                        "the dashboard's address, http://HOST:8265 by default; `trainyard cluster status` prints a "
                        "local cluster's")


def _check_dashboard_token(url: str, token: Token | None, state_dir=None) -> None:
    """Raise unless the dashboard accepts ``token`` on an authenticated endpoint."""
    request = urllib.request.Request(f"{url}/api/version")
    if token:
        _warn_plain_http(url)
        request.add_header("Authorization", f"Bearer {token.value}")
    try:
        _opener.open(request, timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise _redirect_error(url, exc.code, exc.headers.get("Location")) from None
        if exc.code == 401 or (exc.code == 403 and token is None):
            raise ConnectError(
                f"the cluster at {url} uses token authentication and no token was found: {TOKEN_HELP}") from None
        if exc.code == 403:
            raise rejected_token(url, token, parse_address(url), state_dir) from None
        raise ConnectError(f"{url}/api/version answered HTTP {exc.code}: is this a Ray dashboard?") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectError(f"could not reach the Jobs API at {url}: {getattr(exc, 'reason', exc)}") from None
    except http.client.HTTPException as exc:
        raise _not_http(url, exc) from None


def authorize(url: str, *, state_dir=None) -> Token | None:
    """The token to present to the dashboard at ``url``, checked against it (None: it wants none); raises
    ConnectError naming the problem: nothing answers, not a dashboard, a redirect, no token or a rejected one."""
    if _auth_mode(url) == "disabled":
        return None
    token = find_token(parse_address(url), state_dir=state_dir)
    _check_dashboard_token(url, token, state_dir)
    return token


def job_client(address: str | None = None, *, state_dir=None):
    """A ``JobSubmissionClient`` for the cluster at ``address``, authenticated when the cluster wants a token;
    it follows no redirect."""
    url = dashboard_url(address, state_dir=state_dir)
    token = authorize(url, state_dir=state_dir)
    headers = {"Authorization": f"Bearer {token.value}"} if token else {}
    try:
        client_class = ray_compat.job_client_without_redirects(_redirect_error)
        quiet.quiet_jobs_sdk()    # imported by now, its loggers set to INFO: Ray's upload lines are not ours
        return client_class(url, headers=headers)
    except ConnectionError as exc:
        raise ConnectError(f"could not reach the Jobs API at {url}: {exc}") from None
