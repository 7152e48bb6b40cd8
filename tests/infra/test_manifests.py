"""infra/: the manifests parse and agree with each other and with the package.

Static checks only (no cluster, no daemon); ``docker compose config`` runs where the compose plugin is.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
K8S = INFRA / "k8s"
IMAGE_NAME = "segops"  # repository part of every segops image reference (the README's -t segops:<variant>)
SECRETISH = re.compile(r"AWS_|MLFLOW_|PASSWORD|SECRET|TOKEN|KEY")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _one(path: Path, kind: str) -> dict[str, Any]:
    docs = [d for d in _docs(path) if d.get("kind") == kind]
    if len(docs) != 1:
        pytest.fail(f"{path.relative_to(REPO)}: expected one {kind}, found {len(docs)}")
    return docs[0]


def _pod_specs(cluster_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", cluster_spec["headGroupSpec"]["template"]["spec"]
    for group in cluster_spec["workerGroupSpecs"]:
        yield group["groupName"], group["template"]["spec"]


def _image_name(ref: str) -> tuple[str, str]:
    """'registry.example.com/team/segops:cuda' -> ('segops', 'cuda')."""
    name, _, tag = ref.rpartition("/")[2].partition(":")
    return name, tag


@pytest.fixture(scope="module")
def raycluster() -> dict[str, Any]:
    return _one(K8S / "raycluster.yaml", "RayCluster")


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    return _one(K8S / "rayjob.yaml", "RayJob")


@pytest.fixture(scope="module")
def secret_name() -> str:
    return _one(K8S / "secret.example.yaml", "Secret")["metadata"]["name"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((INFRA / "docker-compose.yml").read_text())


def test_every_yaml_under_infra_parses() -> None:
    files = sorted(INFRA.rglob("*.yml")) + sorted(INFRA.rglob("*.yaml"))
    assert len(files) >= 6, files
    for path in files:
        docs = _docs(path)
        assert docs, f"{path.relative_to(REPO)} is empty"
        for doc in docs:
            assert isinstance(doc, dict), (
                f"{path.relative_to(REPO)}: top level is {type(doc).__name__}, expected a mapping"
            )


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_api_version(name: str) -> None:
    doc = _docs(K8S / name)[0]
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == {"raycluster.yaml": "RayCluster", "rayjob.yaml": "RayJob"}[name]


def test_raycluster_has_head_cpu_and_gpu_groups(raycluster: dict[str, Any]) -> None:
    spec = raycluster["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["containers"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu_groups = [
        name
        for name, g in groups.items()
        if any("nvidia.com/gpu" in c["resources"].get("limits", {}) for c in g["template"]["spec"]["containers"])
    ]
    assert gpu_groups, f"no worker group limits nvidia.com/gpu; groups: {sorted(groups)}"
    assert len(groups) >= 2, "expected a CPU worker group beside the GPU one"
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]


def test_rayjob_embeds_the_raycluster_spec(raycluster: dict[str, Any], rayjob: dict[str, Any]) -> None:
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"], "rayjob.yaml and raycluster.yaml drifted apart"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True


def test_every_container_has_resources_and_the_segops_image(raycluster: dict[str, Any], rayjob: dict[str, Any]) -> None:
    pods = list(_pod_specs(raycluster["spec"])) + [("submitter", rayjob["spec"]["submitterPodTemplate"]["spec"])]
    dockerfile = (INFRA / "Dockerfile").read_text()
    readme = (INFRA / "README.md").read_text()
    for where, pod in pods:
        for container in pod["containers"]:
            name, tag = _image_name(container["image"])
            assert name == IMAGE_NAME, f"{where}: image {container['image']!r} is not a {IMAGE_NAME} image"
            assert tag in {"cpu", "cuda"}, f"{where}: tag {tag!r} is not a Dockerfile VARIANT"
            assert f"-t {IMAGE_NAME}:{tag}" in readme and f"-t {IMAGE_NAME}:{tag}" in dockerfile
            res = container["resources"]
            assert res.get("requests") and res.get("limits"), f"{where}/{container['name']}: set requests and limits"


def test_entrypoint_runs_a_known_workflow(rayjob: dict[str, Any]) -> None:
    entrypoint = rayjob["spec"]["entrypoint"].split()
    assert entrypoint[:2] == ["segops", "run"], f"entrypoint {entrypoint!r} should start with 'segops run'"
    workflow = PurePosixPath(entrypoint[2])
    assert (REPO / "workflows" / workflow.name).is_file(), f"{workflow.name} is not in workflows/"


def test_cluster_workflow_matches_the_repo_one_except_paths_and_tracking(rayjob: dict[str, Any]) -> None:
    from segops.config.load import validate_workflow_text

    workflow = PurePosixPath(rayjob["spec"]["entrypoint"].split()[2])
    cm = _one(K8S / "workflows-configmap.yaml", "ConfigMap")
    mounts = {
        m["name"]: m["mountPath"]
        for m in rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    volumes = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["volumes"]
    cm_volume = next(v["name"] for v in volumes if v.get("configMap", {}).get("name") == cm["metadata"]["name"])
    assert str(workflow.parent) == mounts[cm_volume], (
        f"entrypoint reads {workflow.parent}, ConfigMap is at {mounts[cm_volume]}"
    )

    text = cm["data"][workflow.name]
    spec = validate_workflow_text(
        text, source=f"configmap:{workflow.name}", check_paths=False
    )  # /data/ is in the cluster
    cluster = yaml.safe_load(text)
    local = yaml.safe_load((REPO / "workflows" / workflow.name).read_text())
    assert cluster["name"] == local["name"], "same workflow name, so the same registered model"
    assert spec.tracking.uri.startswith(("http://", "https://")), spec.tracking.uri
    secret = _one(K8S / "secret.example.yaml", "Secret")
    assert spec.tracking.uri == secret["stringData"]["MLFLOW_TRACKING_URI"]
    assert cluster["output_dir"].startswith("/data/")
    assert cluster["steps"][0]["source"]["path"].startswith("/data/")
    assert cluster["steps"][1:] == local["steps"][1:], "train/segment steps drifted from the repo workflow"


def test_env_comes_from_the_secret_only(raycluster: dict[str, Any], secret_name: str) -> None:
    for where, pod in _pod_specs(raycluster["spec"]):
        for container in pod["containers"]:
            refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            refs += [
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            ]
            assert refs == [secret_name] or set(refs) == {secret_name}, (
                f"{where}: env not from Secret {secret_name!r}: {refs}"
            )
            literal = [e["name"] for e in container.get("env", []) if "value" in e and SECRETISH.search(e["name"])]
            assert not literal, f"{where}: literal values for {literal}; take them from the Secret"


def test_secret_example_is_a_placeholder() -> None:
    path = K8S / "secret.example.yaml"
    assert "EXAMPLE" in path.read_text()
    values = _one(path, "Secret")["stringData"]
    assert {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"} <= set(
        values
    )
    assert values["AWS_SECRET_ACCESS_KEY"] == "REPLACE_ME"


def test_every_pod_mounts_the_shared_pvc_at_one_path(raycluster: dict[str, Any]) -> None:
    pvc = _one(K8S / "pvc.yaml", "PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "pods on several nodes share it"
    paths = set()
    for where, pod in _pod_specs(raycluster["spec"]):
        volume = next((v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v), None)
        assert volume, f"{where}: no PVC volume"
        claim = next(v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v["name"] == volume)
        assert claim == pvc["metadata"]["name"], (
            f"{where}: mounts {claim!r}, pvc.yaml declares {pvc['metadata']['name']!r}"
        )
        paths |= {m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"] if m["name"] == volume}
    assert paths == {"/data"}, f"shared volume mounted at {sorted(paths)}; every pod needs the same path"


def test_compose_services_have_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "minio", "mlflow"):
        assert name in services, f"missing service {name!r}; have {sorted(services)}"
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_compose_mlflow_waits_for_healthy_stores(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    for dep in ("postgres", "minio"):
        assert mlflow["depends_on"][dep]["condition"] == "service_healthy", dep
    command = " ".join(mlflow["command"]) if isinstance(mlflow["command"], list) else mlflow["command"]
    assert "--backend-store-uri postgresql" in command
    assert "--serve-artifacts" in command
    assert re.search(r"--artifacts-destination s3://", command), command
    assert "MLFLOW_S3_ENDPOINT_URL" in mlflow["environment"]


def test_compose_volumes_are_named_and_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name in ("postgres", "minio"):
        sources = {v.split(":")[0] for v in compose["services"][name]["volumes"]}
        assert sources and sources <= declared, f"{name} uses {sources}, declared named volumes: {declared}"


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=10).returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="docker with the compose plugin is not on PATH")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(INFRA / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_builds_a_non_root_segops_image() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert re.search(r"^FROM .* AS base-cpu$", text, re.M) and re.search(r"^FROM .* AS base-cuda$", text, re.M)
    assert re.search(r"^FROM base-\$\{VARIANT\}", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, f"last USER is {users}"
    assert re.search(r"^RUN pip install \.", text, re.M), "the image must install the package"
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entry and '"segops"' in entry.group(1)


def test_console_script_segops_exists() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get("segops") == "segops.cli:app"


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    patterns = set((INFRA / "Dockerfile.dockerignore").read_text().split())
    assert {".venv", "runs", "data", ".git"} <= patterns
    assert not {"segops", "pyproject.toml", "README.md", "workflows"} & patterns, "the build needs these"
