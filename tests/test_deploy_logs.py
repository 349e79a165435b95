"""Ray logs outlive the cluster: every Ray container of every job shares its log folder with
a Fluent Bit sidecar that uploads to the logs bucket Terraform creates, and the pods' role
may put objects there, under one prefix, and nothing more.

Offline: the rendered job overlays (kubectl kustomize), the sidecar's Fluent Bit config as
the platform renders it, and terraform/ read with python-hcl2. Each check also runs on a
deliberately broken copy that it must reject.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
from typing import Any

import pytest

from tests._deploy_tools.fixtures import CLUSTER_ENV, env_file, renders  # noqa: F401
from tests._deploy_tools.kuberay_submitter import pod_env
from tests.test_deploy_terraform import TERRAFORM, _blocks, _load, _statements

#: where Ray writes a node's logs (a symlink to the current session's folder)
RAY_LOGS = "/tmp/ray/session_latest/logs"
#: KubeRay (pod.go): the volume its autoscaler sidecar mounts at /tmp/ray, reused by name
KUBERAY_LOG_VOLUME = "ray-logs"
JOBS = ("jobs/ingest", "jobs/train")


def _fluent_bit(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """A classic-format Fluent Bit config: ``[(SECTION, {key: [values]})]``."""
    sections: list[tuple[str, dict[str, list[str]]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            sections.append((line.strip("[]").upper(), {}))
            continue
        key, _, value = line.partition(" ")
        sections[-1][1].setdefault(key.lower(), []).append(value.strip())
    return sections


def _pod_templates(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    spec = job["spec"]["rayClusterSpec"]
    out = {"head": spec["headGroupSpec"]["template"]["spec"]}
    out.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return out


def _mounted_at(container: dict[str, Any], folder: str) -> tuple[str, str] | None:
    """(volume, mount path) of the container's mount that holds ``folder``, if any."""
    best = None
    for mount in container.get("volumeMounts") or []:
        path = mount["mountPath"].rstrip("/")
        if (folder == path or folder.startswith(path + "/")) and (
            best is None or len(path) > len(best[1])
        ):
            best = (mount["name"], path)
    return best


def _shipping_problems(job: dict[str, Any], platform: list[dict[str, Any]]) -> list[str]:
    """Why a Ray pod of ``job`` would lose its logs with the cluster (empty: none)."""
    problems = []
    for group, pod in _pod_templates(job).items():
        ray, *others = pod["containers"]  # KubeRay: the Ray container comes first
        held = _mounted_at(ray, RAY_LOGS)
        if held is None:
            problems.append(f"{group}: {ray['name']} keeps its logs in the container's own layer")
            continue
        volume, path = held
        if group == "head" and volume != KUBERAY_LOG_VOLUME:
            # KubeRay mounts a volume named ray-logs into its autoscaler: another name splits
            # the head's log folder in two (the autoscaler's events vanish from the dashboard).
            problems.append(
                f"head: /tmp/ray is volume {volume!r}, the autoscaler gets {KUBERAY_LOG_VOLUME!r}"
            )
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        shippers = [
            c for c in others if _mounted_at(c, RAY_LOGS) and _mounted_at(c, RAY_LOGS)[0] == volume
        ]
        if not shippers:
            problems.append(f"{group}: no container shares {ray['name']}'s log volume {volume!r}")
            continue
        for shipper in shippers:
            problems += [
                f"{group}/{shipper['name']}: {p}"
                for p in _shipper_problems(shipper, volumes, platform, path)
            ]
    return problems


def _shipper_problems(
    shipper: dict[str, Any], volumes: dict[str, Any], platform: list[dict[str, Any]], ray_mount: str
) -> list[str]:
    maps = {d["metadata"]["name"]: d for d in platform if d["kind"] == "ConfigMap"}
    values = maps["slidebank-cluster"]["data"]
    own_path = _mounted_at(shipper, RAY_LOGS)[1]  # type: ignore[index]
    logs_here = posixpath.join(own_path, posixpath.relpath(RAY_LOGS, ray_mount))
    conf_files = [
        maps[volumes[m["name"]]["configMap"]["name"]]["data"]
        for m in shipper.get("volumeMounts") or []
        if "configMap" in volumes.get(m["name"], {})
    ]
    sections = [s for files in conf_files for text in files.values() for s in _fluent_bit(text)]
    inputs = [s for name, s in sections if name == "INPUT" and s.get("name") == ["tail"]]
    outputs = [s for name, s in sections if name == "OUTPUT"]
    problems = []
    if not inputs or not all(
        p.startswith(logs_here + "/") for s in inputs for p in s["path"][0].split(",")
    ):
        problems.append(f"does not tail the Ray logs at {logs_here}")
    env = pod_env(shipper, platform, "slidebank") | {
        e["name"]: "(downward API)"
        for e in shipper.get("env") or []
        if "fieldRef" in e.get("valueFrom", {})
    }
    if [o.get("name") for o in outputs] != [["s3"]]:
        return [*problems, f"outputs are {[o.get('name') for o in outputs]}, not one S3 upload"]
    out = outputs[0]
    if out.get("bucket") != ["${SLIDEBANK_LOGS_BUCKET}"] or env.get(
        "SLIDEBANK_LOGS_BUCKET"
    ) != values.get("SLIDEBANK_LOGS_BUCKET"):
        problems.append("its S3 output is not the logs bucket from Terraform's values")
    key = (out.get("s3_key_format") or [""])[0]
    if not key.lstrip("/").startswith("${SLIDEBANK_LOGS_PREFIX}"):
        problems.append(f"objects land outside the granted prefix: {key!r}")
    if out.get("use_put_object") != ["On"]:
        problems.append("multipart uploads need more than s3:PutObject (abort)")
    used = {
        v
        for _, s in sections
        for vals in s.values()
        for val in vals
        for v in re.findall(r"\$\{(\w+)\}", val)
    }
    if used - set(env):
        problems.append(f"config reads {sorted(used - set(env))} that the container does not set")
    if not values.get("SLIDEBANK_LOGS_BUCKET"):
        problems.append("slidebank-cluster has no SLIDEBANK_LOGS_BUCKET")
    return problems


def _jobs(renders: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:  # noqa: F811
    return [d for o in JOBS for d in renders[o] if d["kind"] == "RayJob"]


def test_every_ray_container_ships_its_logs_to_the_logs_bucket(renders) -> None:  # noqa: F811
    jobs = _jobs(renders)
    assert {j["metadata"]["name"] for j in jobs} == {"slidebank-ingest", "slidebank-train"}
    for job in jobs:
        assert _shipping_problems(job, renders[""]) == [], job["metadata"]["name"]
    # The shipper keeps its own image (the values component sets only the Ray containers').
    images = {
        c["image"]
        for j in jobs
        for pod in _pod_templates(j).values()
        for c in pod["containers"][1:]
    }
    assert images and all("fluent-bit" in i for i in images)
    bucket = env_file(CLUSTER_ENV)["SLIDEBANK_LOGS_BUCKET"]
    platform = {d["metadata"]["name"]: d for d in renders[""] if d["kind"] == "ConfigMap"}
    assert platform["slidebank-cluster"]["data"]["SLIDEBANK_LOGS_BUCKET"] == bucket


@pytest.mark.parametrize(
    "breakage",
    [
        "no_shipper_mount",
        "head_volume_renamed",
        "no_ray_mount",
        "other_bucket",
        "key_outside_prefix",
        "no_bucket_value",
    ],
)
def test_the_log_check_rejects_a_broken_job(renders, breakage: str) -> None:  # noqa: F811
    job = copy.deepcopy(_jobs(renders)[0])
    platform = copy.deepcopy(renders[""])
    pods = _pod_templates(job)
    head, worker = pods["head"], pods["gpu"]
    conf = next(d for d in platform if d["metadata"]["name"] == "slidebank-fluent-bit")["data"]
    name = next(iter(conf))
    if breakage == "no_shipper_mount":
        worker["containers"][1]["volumeMounts"] = [
            m for m in worker["containers"][1]["volumeMounts"] if m["mountPath"] != "/tmp/ray"
        ]
    elif breakage == "head_volume_renamed":  # the split the autoscaler's log volume suffered
        for container in head["containers"]:
            for mount in container["volumeMounts"]:
                if mount["name"] == KUBERAY_LOG_VOLUME:
                    mount["name"] = "ray-tmp"
        for volume in head["volumes"]:
            if volume["name"] == KUBERAY_LOG_VOLUME:
                volume["name"] = "ray-tmp"
    elif breakage == "no_ray_mount":
        worker["containers"][0]["volumeMounts"] = [
            m for m in worker["containers"][0]["volumeMounts"] if m["mountPath"] != "/tmp/ray"
        ]
    elif breakage == "other_bucket":
        conf[name] = conf[name].replace("${SLIDEBANK_LOGS_BUCKET}", "my-own-bucket")
    elif breakage == "key_outside_prefix":
        conf[name] = conf[name].replace("/${SLIDEBANK_LOGS_PREFIX}", "/")
    else:  # the sidecar no longer reads Terraform's values
        for pod in pods.values():
            pod["containers"][1].pop("envFrom")
    assert _shipping_problems(job, platform) != []


def test_the_pods_may_only_put_ray_logs_under_one_prefix() -> None:
    terraform = _load(TERRAFORM)
    policy = _blocks(terraform, "data")["aws_iam_policy_document.pods"]
    on_logs = [s for s in _statements(policy) if "aws_s3_bucket.logs" in json.dumps(s)]
    assert len(on_logs) == 1, on_logs
    grant = on_logs[0]
    assert grant.get("effect", "Allow") == "Allow"
    assert grant["actions"] == ["s3:PutObject"]
    assert grant["resources"] == ["${aws_s3_bucket.logs.arn}/${var.ray_logs_prefix}*"]
    # The prefix is never empty (that would be the whole bucket, access logs included).
    variable = _blocks(terraform, "variable")["ray_logs_prefix"]
    condition = variable["validation"][0]["condition"]
    pattern = re.search(r'regex\("(.+)", var\.ray_logs_prefix\)', condition).group(1)  # type: ignore[union-attr]
    pattern = pattern.encode().decode("unicode_escape")
    assert re.fullmatch(pattern, variable["default"])
    for bad in ("", "/", "*", "ray-logs"):
        assert not re.fullmatch(pattern, bad), bad
    # The manifests' bucket and prefix are Terraform's.
    env = _blocks(terraform, "output")["kustomize_env"]["value"]
    assert "SLIDEBANK_LOGS_BUCKET=${aws_s3_bucket.logs.id}" in env
    assert "SLIDEBANK_LOGS_PREFIX=${var.ray_logs_prefix}" in env
