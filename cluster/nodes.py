"""The alive nodes of a Ray cluster, as one record whichever way they were asked for.

- ``alive_nodes()``: from a connected driver (``ray.nodes()``);
- ``alive_nodes_from_gcs(address, token)``: one gRPC call to the GCS, no driver started (``cluster status``,
  and ``cluster up`` waiting for its nodes, which must not join the cluster they watch).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cluster.errors import Failure

_HEAD_RESOURCE = "node:__internal_head__"


@dataclass(frozen=True)
class Node:
    node_id: str                                  # hex
    ip: str
    head: bool
    resources: dict[str, float] = field(default_factory=dict)   # totals, without Ray's "node:..." markers
    temp_dir: str | None = None                   # known from the GCS only
    raylet_port: int | None = None                # the raylet's (node manager's) port, on `ip`
    available: dict[str, float] | None = None     # free now, where asked (`alive_nodes_from_gcs`)

    @property
    def label(self) -> str:
        """How errors name the node: "node 1a2b3c4d (10.0.0.5, head)"."""
        return f"node {self.node_id[:8]} ({self.ip}{', head' if self.head else ''})"

    def to_dict(self) -> dict:
        return asdict(self)


def _resources(total) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(total.items()) if not k.startswith("node:")}


def alive_nodes() -> list[Node]:
    """The cluster's alive nodes, asked through the connected driver (``cluster.connection`` first)."""
    import ray

    if not ray.is_initialized():
        raise Failure("alive_nodes() needs a connected Ray: call cluster.connect() first")
    return [Node(n["NodeID"], n.get("NodeManagerAddress", ""), _HEAD_RESOURCE in n.get("Resources", {}),
                 _resources(n.get("Resources", {})), raylet_port=n.get("NodeManagerPort") or None)
            for n in ray.nodes() if n.get("Alive")]


def metrics_urls() -> list[str]:
    """Each alive node's Ray metrics agent (Prometheus format), this machine's first; from a connected driver."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")]
    here = ray.util.get_node_ip_address() if ray.is_initialized() else None
    nodes.sort(key=lambda n: n.get("NodeManagerAddress") != here)
    return [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics" for n in nodes]


def alive_nodes_from_gcs(address: str, token: str | None, *, timeout_s: float = 5.0) -> list[Node]:
    """The alive nodes as the GCS at ``address`` (host:port) sees them; no driver is started."""
    import grpc
    from ray.core.generated import gcs_pb2, gcs_service_pb2 as pb, gcs_service_pb2_grpc as pb_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo(
            pb.GetAllNodeInfoRequest(), timeout=timeout_s, metadata=metadata)
        # What each node has free: CPUs reserved by a job that ended showed nowhere ("CPU 2" while none was free).
        try:
            usage = pb_grpc.NodeResourceInfoGcsServiceStub(channel).GetAllResourceUsage(
                pb.GetAllResourceUsageRequest(), timeout=timeout_s, metadata=metadata)
            free = {u.node_id.hex(): _resources(u.resources_available) for u in usage.resource_usage_data.batch}
        except grpc.RpcError:       # the totals stand without it
            free = {}
    return [Node(info.node_id.hex(), info.node_manager_address, info.is_head_node,
                 _resources(info.resources_total), info.temp_dir or None, info.node_manager_port or None,
                 free.get(info.node_id.hex()))
            for info in reply.node_info_list if info.state == gcs_pb2.GcsNodeInfo.ALIVE]
