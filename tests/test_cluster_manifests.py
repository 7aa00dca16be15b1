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


@pytest.mark.parametrize("where,spec", list(_cluster_specs()), ids=lambda v: v if isinstance(v, str) else "")
def test_a_head_that_declares_ports_declares_the_gcs_and_client_ports(where, spec):
    """KubeRay builds the head Service from the ports the head container declares, its defaults only when it
    declares none: the RayService's head declared the dashboard and Serve alone, so with the operator's ClusterIP
    head Service the workers could not reach the GCS on 6379."""
    [head] = spec["headGroupSpec"]["template"]["spec"]["containers"][:1]
    declared = {p["containerPort"] for p in head.get("ports", [])}
    assert not declared or {6379, 8265, 10001} <= declared, (where, declared)


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
    scaling = app["deployments"][0]["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] < scaling["max_replicas"]


def _pods(spec: dict) -> list[dict]:
    """The pod templates of a RayCluster spec: the head's, then each worker group's."""
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def _readme_kubernetes() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme[readme.index("**4. Kubernetes"):readme.index("**5. AWS")]


def test_rayservice_reads_the_bundle_from_object_storage_with_the_clusters_storage_secret():
    """It mounted a PVC `trainyard-bundles` that nothing created, and served OUTPUT/bundle, a link that a run on
    s3:// does not write (there: bundles/<version> and bundles/LATEST). build_app resolves a run's output URI
    to its latest bundle itself (jobs.bundle.resolve) and ships the files to the replicas: no volume needed."""
    from jobs import bundle

    manifest = load_manifest("rayservice.yaml")
    app = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]
    uri = app["args"]["bundle"]
    assert uri.startswith("s3://") and not uri.rstrip("/").endswith(f"/{bundle.POINTER}"), uri
    assert "/runs/" in uri and (bundle.VERSIONS, bundle.LATEST) == ("bundles", "LATEST")
    storage = {s["secretRef"]["name"] for _, spec in _cluster_specs() for pod in _pods(spec)
               for c in pod["spec"]["containers"] for s in c.get("envFrom", []) if "secretRef" in s}
    assert storage == {"trainyard-storage"}, storage
    for pod in _pods(manifest["spec"]["rayClusterConfig"]):
        # no volume for the bundle: only the memory-backed /dev/shm every pod has
        assert pod["spec"]["volumes"] == [{"name": "shm", "emptyDir": {"medium": "Memory"}}], pod["spec"]["volumes"]
        container = pod["spec"]["containers"][0]
        assert container["volumeMounts"] == [{"name": "shm", "mountPath": "/dev/shm"}]
        assert {"secretRef": {"name": "trainyard-storage", "optional": True}} in container["envFrom"]


def test_rayservice_takes_the_serving_token_from_a_secret_on_every_pod():
    """The prediction endpoint had no token. build_app reads it from TRAINYARD_SERVE_TOKEN on the node where
    Serve builds the app (any node), so every pod gets it, from a Secret, never written in the manifest."""
    from serving.settings import TOKEN_ENV

    manifest = load_manifest("rayservice.yaml")
    for pod in _pods(manifest["spec"]["rayClusterConfig"]):
        env = {e["name"]: e for e in pod["spec"]["containers"][0].get("env", [])}
        assert TOKEN_ENV in env, pod
        assert "value" not in env[TOKEN_ENV]
        ref = env[TOKEN_ENV]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "trainyard-serve-token", "key": "token"}     # not optional: no token, no pods
    assert TOKEN_ENV not in manifest["spec"]["serveConfigV2"]
    for text in [_readme_kubernetes(), (KUBERAY / "rayservice.yaml").read_text()]:
        assert "kubectl create secret generic trainyard-serve-token --from-file=token=" in text
        assert "curl -s localhost:8000/predict -H 'content-type: application/json' -H \"Authorization: Bearer" in text


def _references(manifest: dict):
    """(kind, name, optional) of every Secret, ConfigMap and PersistentVolumeClaim the manifest's pods use."""
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("secretRef", "secretKeyRef") and isinstance(value, dict):
                    yield "secret", value["name"], value.get("optional", False)
                elif key == "secret" and isinstance(value, dict) and "secretName" in value:
                    yield "secret", value["secretName"], value.get("optional", False)
                elif key in ("configMapRef", "configMapKeyRef", "configMap") and isinstance(value, dict):
                    yield "configmap", value["name"], value.get("optional", False)
                elif key == "persistentVolumeClaim":
                    yield "pvc", value["claimName"], False
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    yield from walk(manifest)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_every_secret_and_configmap_a_manifest_uses_is_created_by_a_command_it_shows(name):
    """A pod waiting on a volume or a Secret that nothing creates never starts (rayservice.yaml mounted a PVC
    that nothing created): each one is created by a `kubectl create` line in README and, unless optional, in
    the manifest's own comment."""
    text = (KUBERAY / name).read_text().replace("#   ", "")
    k8s = _readme_kubernetes()
    for kind, ref, optional in set(_references(load_manifest(name))):
        assert kind != "pvc", f"{name}: PersistentVolumeClaim {ref}: nothing creates it"
        command = f"kubectl create {'secret generic' if kind == 'secret' else 'configmap'} {ref} "
        assert command in k8s, (name, ref)
        assert optional or command in text, (name, ref)


def _services(manifest: dict) -> set[str]:
    """The Services KubeRay creates for a manifest (utils.GenerateHeadServiceName / GenerateServeServiceName):
    a RayCluster `<name>-head-svc` (or headService's name), a RayService its own `<name>-head-svc` and
    `<name>-serve-svc`; a RayJob's cluster is named `<name>-<random>`."""
    meta = manifest["metadata"]["name"]
    if manifest["kind"] == "RayCluster":
        custom = (manifest["spec"]["headGroupSpec"].get("headService") or {}).get("metadata", {}).get("name")
        return {custom or f"{meta}-head-svc"}
    if manifest["kind"] == "RayService":
        return {f"{meta}-head-svc", f"{meta}-serve-svc"}
    return set()


def test_the_manifests_can_be_applied_side_by_side_and_the_port_forwards_name_their_services():
    """The RayService was named `trainyard` like the RayCluster: both would own `trainyard-head-svc`."""
    manifests = [load_manifest(name) for name in MANIFESTS]
    names = [m["metadata"]["name"] for m in manifests]
    assert len(set(names)) == len(names), names
    services = [svc for m in manifests for svc in _services(m)]
    assert len(set(services)) == len(services), services
    assert load_manifest("rayservice.yaml")["metadata"]["name"] == "trainyard-serve"
    for text in [_readme_kubernetes(), *((KUBERAY / n).read_text() for n in MANIFESTS)]:
        for svc in re.findall(r"port-forward svc/(\S+)", text):
            assert svc in services, (svc, services)


def _cpus_per_pod(group: dict) -> float:
    declared = group.get("rayStartParams", {}).get("num-cpus")
    if declared is not None:
        return float(declared)
    quantity = group["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize("where,spec", list(_cluster_specs()), ids=lambda v: v if isinstance(v, str) else "")
def test_the_nodes_trainyard_counts_on_stay_up(where, spec):
    """trainyard checks CPUs and GPUs against the nodes present when a job starts, and a refused job asks the
    autoscaler for nothing. A CPU group at minReplicas 0 left the cluster with 0 CPUs (the head has num-cpus 0)
    after idleTimeoutSeconds, and the next submit was refused. Every group starts at its minReplicas, and the
    CPU workers that stay hold the example's run with a CPU to spare for Ray Data."""
    from jobs.spec import load_spec

    train = load_spec(ROOT / "examples" / "machine-failure.yaml").train
    assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", where
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    for group in groups.values():
        assert group.get("replicas", 0) == group["minReplicas"], (where, group["groupName"])
    assert groups["cpu"]["minReplicas"] >= 1, where
    if where != "rayservice.yaml":
        held = groups["cpu"]["minReplicas"] * _cpus_per_pod(groups["cpu"])
        assert held >= train.workers * train.cpus_per_worker + 1, where


def test_the_gpu_groups_say_that_the_user_sets_them_and_what_zero_means():
    for name in ("raycluster.yaml", "rayjob.yaml"):
        text = " ".join((KUBERAY / name).read_text().replace("#", " ").split())
        assert "none until a trainer asks" not in text
        assert "replicas and minReplicas" in text, name
        assert "auto` trains on CPUs" in text and "use_gpu: true` is refused" in text, name
    k8s = " ".join(_readme_kubernetes().split())
    assert "the nodes up when the job starts" in k8s and "`minReplicas`" in k8s


def test_the_rayjob_runs_a_spec_from_a_configmap_mounted_on_the_head():
    """The driver of a RayJob runs on the head (Ray's job manager puts it there unless the entrypoint asks for
    resources), and `trainyard run SPEC` reads a file: the ConfigMap's key spec.yaml, mounted there."""
    spec = load_manifest("rayjob.yaml")["spec"]
    path = re.search(r"trainyard run (\S+\.yaml)", spec["entrypoint"]).group(1)
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    (volume,) = [n for n, m in mounts.items() if path.startswith(m + "/")]
    configmap = {v["name"]: v for v in head["volumes"]}[volume]["configMap"]["name"]
    assert path == f"{mounts[volume]}/spec.yaml"
    assert not any(k in spec for k in ("entrypointNumCpus", "entrypointNumGpus", "entrypointResources"))
    command = f"kubectl create configmap {configmap} --from-file=spec.yaml="
    assert command in (KUBERAY / "rayjob.yaml").read_text() and command in _readme_kubernetes()


def test_the_image_has_the_text_extra():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("transformers") for r in extras["text"])
    assert 'pip install --no-cache-dir "/app[text]"' in (ROOT / "cluster" / "Dockerfile").read_text()


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


def test_the_launchers_cpu_workers_stay_up_for_trainyards_checks():
    """trainyard counts the workers up when a run starts, and a refused run asks the autoscaler for nothing: with
    min_workers 0 an idle cluster shrank to a CPU-less head, and every submit was then refused."""
    types = _launcher_config()["available_node_types"]
    assert types["head"]["resources"]["CPU"] == 0 and types["cpu_worker"]["min_workers"] >= 1
    assert "use_gpu: true` is refused" in LAUNCHER.read_text()       # what a GPU group at 0 means, said


@pytest.mark.parametrize("where,spec", list(_cluster_specs()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_pod_runs_as_the_images_user_under_pod_security_restricted_with_a_memory_backed_shm(where, spec):
    """A namespace at Pod Security "restricted" refused every pod (no securityContext: root allowed, privilege
    escalation, all capabilities, no seccomp profile); and Ray's object store had the container's 64 MB /dev/shm,
    falling back to /tmp on disk."""
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    for name, group in groups:
        pod = group["template"]["spec"]
        assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000,
                                          "seccompProfile": {"type": "RuntimeDefault"}}, (where, name)
        assert {"name": "shm", "emptyDir": {"medium": "Memory"}} in pod["volumes"], (where, name)
        for container in pod["containers"]:
            assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                                    "capabilities": {"drop": ["ALL"]}}, (where, name)
            assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"], (where, name)
    # the autoscaler's sidecar in the head pod, and a RayJob's submitter pod, as restricted
    assert spec["autoscalerOptions"]["securityContext"] == {"allowPrivilegeEscalation": False,
                                                            "capabilities": {"drop": ["ALL"]}}, where
    if where == "rayjob.yaml":
        submitter = load_manifest("rayjob.yaml")["spec"]["submitterPodTemplate"]["spec"]
        assert submitter["securityContext"]["runAsNonRoot"] and submitter["containers"][0]["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    # uid 1000 is the image's `ray`, whose files the Dockerfile copies in; the torch is the one the tests ran on
    dockerfile = (ROOT / "cluster" / "Dockerfile").read_text()
    assert "--chown=ray:users" in dockerfile and "rayproject/ray:2.60.0" in dockerfile
    # /app is ray's before pip builds in it: WORKDIR alone makes it root's under the legacy builder and kaniko
    made, back, work = (dockerfile.index(s) for s in ("chown ray:users /app", "\nUSER ray\n", "\nWORKDIR /app"))
    assert made < back < work < dockerfile.index("pip install"), (made, back, work)
    makefile_torch = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert f"ARG TORCH_VERSION={makefile_torch}" in dockerfile and '"torch==${TORCH_VERSION}"' in dockerfile
