"""The scale-out manifests are checked, not just written: KubeRay resources against the KubeRay v1.7.0 CRDs'
OpenAPI schemas (tests/schemas/kuberay, see PROVENANCE.md), the cluster-launcher YAML against Ray's own
ray-schema.json and config validation."""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CRDS = ROOT / "tests" / "schemas" / "kuberay"
KUBERAY = ROOT / "cluster" / "kuberay"
LAUNCHER = ROOT / "cluster" / "launcher" / "aws.yaml"
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are ~1 MB each

MANIFESTS = {"raycluster.yaml": "ray.io_rayclusters.yaml", "rayjob.yaml": "ray.io_rayjobs.yaml",
             "rayservice.yaml": "ray.io_rayservices.yaml"}


def _strict(schema):
    """Refuse undeclared fields, as `kubectl apply --validate=strict` does (an API server would silently
    prune them, so a misspelt `enableInTreeAutoscalling` would pass a plain schema check)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


_schemas: dict = {}


def crd_schema(crd_file: str, api_version: str) -> dict:
    if (crd_file, api_version) not in _schemas:
        crd = yaml.load((CRDS / crd_file).read_text(), Loader=_Loader)
        version = api_version.split("/")[-1]
        matching = [v for v in crd["spec"]["versions"] if v["name"] == version]
        assert matching, f"{crd_file} has no version {version}: {[v['name'] for v in crd['spec']['versions']]}"
        _schemas[(crd_file, api_version)] = _strict(matching[0]["schema"]["openAPIV3Schema"])
    return _schemas[(crd_file, api_version)]


def problems(manifest: dict, crd_file: str) -> list[str]:
    schema = crd_schema(crd_file, manifest["apiVersion"])
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in validator.iter_errors(manifest)]


def load_manifest(name: str) -> dict:
    docs = [d for d in yaml.safe_load_all((KUBERAY / name).read_text()) if d]
    assert len(docs) == 1, f"{name}: expected one resource, found {len(docs)}"
    return docs[0]


def test_crd_copies_match_their_provenance():
    note = (CRDS / "PROVENANCE.md").read_text()
    for crd_file in MANIFESTS.values():
        digest = hashlib.sha256((CRDS / crd_file).read_bytes()).hexdigest()
        assert f"`{crd_file}` | `{digest}`" in note, f"{crd_file} differs from the copy PROVENANCE.md records"
    assert "v1.7.0" in note and "feeaf72facab4881ba2b179248bb67315634e229" in note


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_kuberay_manifest_validates_against_crd(name):
    manifest = load_manifest(name)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert problems(manifest, MANIFESTS[name]) == []


def test_strict_validation_catches_a_misspelt_field_and_a_wrong_type():
    manifest = load_manifest("raycluster.yaml")
    manifest["spec"]["enableInTreeAutoscalling"] = True
    manifest["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "eight"
    found = problems(manifest, MANIFESTS["raycluster.yaml"])
    assert any("enableInTreeAutoscalling" in p for p in found), found
    assert any("workerGroupSpecs.0.maxReplicas" in p for p in found), found


def _cluster_specs():
    """(where, RayCluster spec) of every cluster the three manifests create."""
    yield "raycluster.yaml", load_manifest("raycluster.yaml")["spec"]
    yield "rayjob.yaml", load_manifest("rayjob.yaml")["spec"]["rayClusterSpec"]
    yield "rayservice.yaml", load_manifest("rayservice.yaml")["spec"]["rayClusterConfig"]


@pytest.mark.parametrize("where,spec", list(_cluster_specs()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_cluster_autoscales_with_token_auth(where, spec):
    assert spec["enableInTreeAutoscaling"] is True, where
    assert spec["authOptions"]["mode"] == "token", where
    assert spec["rayVersion"].startswith("2.60"), where
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], (where, group["groupName"])


def test_raycluster_has_cpu_and_gpu_worker_groups():
    groups = {g["groupName"]: g for g in load_manifest("raycluster.yaml")["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1" and gpu["requests"]["nvidia.com/gpu"] == "1"
    cpu = groups["cpu"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in cpu["limits"]


def test_rayjob_runs_trainyard_without_serving_and_cleans_up():
    spec = load_manifest("rayjob.yaml")["spec"]
    assert re.search(r"trainyard run \S+\.yaml --no-serve", spec["entrypoint"]), spec["entrypoint"]
    # A cluster's nodes cannot read the submitter's disk: data and output are URIs.
    assert "--set data.path=s3://" in spec["entrypoint"] and "--set output=s3://" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True


def test_rayservice_serves_a_bundle_with_serve_autoscaling():
    serve_config = yaml.safe_load(load_manifest("rayservice.yaml")["spec"]["serveConfigV2"])
    from ray.serve.schema import ServeDeploySchema  # Serve's own validation of serveConfigV2

    ServeDeploySchema.model_validate(serve_config)
    app = serve_config["applications"][0]
    assert app["import_path"] == "serving.app:build_app"
    assert app["args"]["bundle"].endswith("/bundle")
    # Every replica loads the bundle: the folder must be on a volume each pod of the cluster mounts.
    cluster = load_manifest("rayservice.yaml")["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        assert any(app["args"]["bundle"].startswith(m["mountPath"] + "/") for m in mounts)
    scaling = app["deployments"][0]["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] < scaling["max_replicas"]


# ---------------------------------------------------------------------------------------------- launcher

def _launcher_config() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def test_launcher_yaml_validates_against_rays_schema():
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(_launcher_config(), schema)


def test_launcher_yaml_passes_rays_own_config_checks():
    """What `ray up` does before touching AWS: fill in the provider's defaults, then validate."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(_launcher_config()))


def test_launcher_has_cpu_head_cpu_and_gpu_workers_with_bounds():
    config = _launcher_config()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and not head["node_config"]["InstanceType"].startswith(("g", "p"))
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert any(t["resources"].get("GPU", 0) >= 1 for t in workers.values())
    assert any(t["resources"].get("GPU", 0) == 0 and t["resources"]["CPU"] > 0 for t in workers.values())
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"], name
    assert sum(t["min_workers"] for t in workers.values()) <= config["max_workers"]


def test_schema_check_catches_a_broken_launcher_config():
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = _launcher_config()
    config["available_node_types"]["gpu_worker"]["max_wokers"] = 4
    with pytest.raises(jsonschema.ValidationError, match="max_wokers"):
        jsonschema.validate(config, schema)


def test_the_curl_examples_post_to_the_apps_predict_route_and_the_images_are_the_ones_readme_builds():
    """rayservice.yaml said `curl localhost:8000/` (a 405: the app answers POST /predict); README built
    `<registry>/trainyard:0.1.0` and applied manifests naming `trainyard:0.1.0` and a `-gpu` image it never built."""
    readme = (ROOT / "README.md").read_text()
    app = (ROOT / "serving" / "app.py").read_text()
    for text in [readme, *(p.read_text() for p in KUBERAY.glob("*.yaml"))]:
        for path in re.findall(r"curl -s localhost:8000(\S*) -H 'content-type: application/json'", text):
            assert path == "/predict" and '@app.post("/predict"' in app, path
    images = {m for p in KUBERAY.glob("*.yaml") for m in re.findall(r"image: (\S+)", p.read_text())}
    assert images == {"trainyard:0.1.0", "trainyard:0.1.0-gpu"}
    k8s = readme[readme.index("**4. Kubernetes"):readme.index("**5. AWS")]
    for image in images:
        assert f"docker build -f cluster/Dockerfile -t <registry>/{image} " in k8s
    assert "sed -i 's#image: trainyard:#image: <registry>/trainyard:#' cluster/kuberay/*.yaml" in k8s
