"""The shared pieces of cluster/ that others use: free ports, node records, the state folder. No Ray started."""
from __future__ import annotations

import socket

import pytest

from cluster import ports
from cluster.errors import Failure
from cluster.nodes import Node
from cluster.state import STATE_DIR_ENV, state_dir


def test_cluster_ports_are_never_ones_the_os_could_hand_out():
    """`cluster up` picks its GCS, dashboard, client and agent ports before `ray start` binds them. From the
    OS's own range ("any free port") another process could be given one meanwhile: the head's Ray Client
    server once found its port taken. Below that range only someone naming the port can take it.
    (Moved from test_cluster_local.py with the picker, which `cluster up` and Serve now share.)"""
    chosen = ports.free_ports(6)
    assert len(set(chosen)) == 6
    assert all(ports.OURS_FROM <= p < ports.ephemeral_start() for p in chosen), chosen
    assert all(p < 30000 for p in chosen), "Serve's replicas take 30000-31000"
    for port in chosen:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))              # free: nothing holds it once chosen


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_free_ports_on_ipv6():
    (port,) = ports.free_ports(1, "::1")
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", port))


def test_no_free_port_names_the_range(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        monkeypatch.setattr(ports, "port_range", lambda: range(port, port + 1))
        with pytest.raises(ports.NoFreePorts, match=f"found only 0 of 1 free ports on 127.0.0.1 in {port}-{port}"):
            ports.free_ports(1)
    assert issubclass(ports.NoFreePorts, Failure)


def test_an_ephemeral_range_below_ours_is_named(monkeypatch):
    monkeypatch.setattr(ports, "ephemeral_start", lambda: 15000)
    with pytest.raises(ports.NoFreePorts, match="inside the OS's ephemeral range here.*15000"):
        ports.free_ports(1)


def test_node_record_label_and_dict():
    node = Node("1a2b3c4d5e6f", "10.0.0.5", True, {"CPU": 2.0})
    assert node.label == "node 1a2b3c4d (10.0.0.5, head)"
    assert Node("ffff0000aaaa", "10.0.0.6", False).label == "node ffff0000 (10.0.0.6)"
    assert node.to_dict() == {"node_id": "1a2b3c4d5e6f", "ip": "10.0.0.5", "head": True,
                              "resources": {"CPU": 2.0}, "temp_dir": None, "raylet_port": None, "available": None}


def test_state_dir_argument_then_environment_then_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STATE_DIR_ENV, raising=False)
    assert state_dir() == tmp_path.resolve() / ".trainyard"
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "env"))
    assert state_dir() == tmp_path.resolve() / "env"
    assert state_dir(tmp_path / "arg") == tmp_path.resolve() / "arg"


def test_cluster_errors_derive_from_the_root_by_meaning():
    from cluster.address import ConnectError
    from cluster.errors import BadInput
    from cluster.jobs_api import JobNotFound
    from cluster.local import ClusterError
    from cluster.state import StateError
    from cluster.storage import StorageError

    assert issubclass(ConnectError, BadInput) and issubclass(JobNotFound, BadInput)
    assert issubclass(StorageError, BadInput)
    assert issubclass(ClusterError, Failure) and issubclass(StateError, Failure)
