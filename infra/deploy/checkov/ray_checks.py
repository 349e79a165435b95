"""slidebank's own checkov policies for KubeRay resources (RayCluster, RayJob).

checkov's built-in Kubernetes checks look only at Pods and the built-in workload kinds;
a RayCluster or RayJob gets none (checked with checkov 3.3.30). These close that gap
for the rules this deployment depends on. Run with
``checkov --external-checks-dir infra/deploy/checkov``.
"""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.kubernetes.checks.resource.base_spec_check import BaseK8Check

RAY_KINDS = ("RayCluster", "RayJob")


def _cluster_spec(conf: dict[str, Any]) -> dict[str, Any]:
    spec = conf.get("spec") or {}
    if conf.get("kind") == "RayJob":
        return spec.get("rayClusterSpec") or {}
    return spec


def _containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(((template or {}).get("spec") or {}).get("containers") or [])


def _groups(cluster: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    head = cluster.get("headGroupSpec") or {}
    groups = [("head", head)]
    groups += [(w.get("groupName", "?"), w) for w in cluster.get("workerGroupSpecs") or []]
    return groups


class RayTokenAuth(BaseK8Check):
    def __init__(self) -> None:
        super().__init__(name="Ray clusters require token authentication (authOptions.mode: token)",
                         id="CKV_SLIDEBANK_RAY_1", categories=(CheckCategories.IAM,),
                         supported_entities=RAY_KINDS)

    def scan_spec_conf(self, conf: dict[str, Any]) -> CheckResult:
        mode = (_cluster_spec(conf).get("authOptions") or {}).get("mode")
        return CheckResult.PASSED if mode == "token" else CheckResult.FAILED


class RayHeadTakesNoWork(BaseK8Check):
    def __init__(self) -> None:
        super().__init__(name="The Ray head schedules no tasks (rayStartParams num-cpus: \"0\")",
                         id="CKV_SLIDEBANK_RAY_2", categories=(CheckCategories.GENERAL_SECURITY,),
                         supported_entities=RAY_KINDS)

    def scan_spec_conf(self, conf: dict[str, Any]) -> CheckResult:
        head = _cluster_spec(conf).get("headGroupSpec") or {}
        cpus = str((head.get("rayStartParams") or {}).get("num-cpus", ""))
        return CheckResult.PASSED if cpus == "0" else CheckResult.FAILED


def _gpu_blind(container: dict[str, Any]) -> bool:
    return any(e.get("name") == "NVIDIA_VISIBLE_DEVICES" and e.get("value") == "void"
               for e in container.get("env") or [])


class RayGpuLimits(BaseK8Check):
    """A GPU requested without a limit is not allocated by the device plugin, and a group
    on the GPU node pool without any GPU limit would see every GPU of its node. A sidecar
    there (the log shipper) passes without a GPU only when it is blind to them
    (``NVIDIA_VISIBLE_DEVICES=void``)."""

    def __init__(self) -> None:
        super().__init__(name="Ray GPU worker groups set nvidia.com/gpu limits equal to requests",
                         id="CKV_SLIDEBANK_RAY_3", categories=(CheckCategories.GENERAL_SECURITY,),
                         supported_entities=RAY_KINDS)

    def scan_spec_conf(self, conf: dict[str, Any]) -> CheckResult:
        for _, group in _groups(_cluster_spec(conf)):
            template = group.get("template") or {}
            tolerates_gpu = any(t.get("key") == "nvidia.com/gpu"
                                for t in (template.get("spec") or {}).get("tolerations") or [])
            for container in _containers(template):
                resources = container.get("resources") or {}
                limit = (resources.get("limits") or {}).get("nvidia.com/gpu")
                request = (resources.get("requests") or {}).get("nvidia.com/gpu")
                if request is not None and str(request) != str(limit):
                    return CheckResult.FAILED
                if tolerates_gpu and limit is None and not _gpu_blind(container):
                    return CheckResult.FAILED
        return CheckResult.PASSED


class RayNoPublicLoadBalancer(BaseK8Check):
    """The head Service carries the dashboard and job API (remote code execution): never a
    LoadBalancer unless it is explicitly internal."""

    def __init__(self) -> None:
        super().__init__(name="The Ray head Service is not a public LoadBalancer",
                         id="CKV_SLIDEBANK_RAY_4", categories=(CheckCategories.NETWORKING,),
                         supported_entities=RAY_KINDS)

    def scan_spec_conf(self, conf: dict[str, Any]) -> CheckResult:
        head = _cluster_spec(conf).get("headGroupSpec") or {}
        service = head.get("headService") or {}
        kind = head.get("serviceType") or (service.get("spec") or {}).get("type")
        if kind != "LoadBalancer":
            return CheckResult.PASSED
        annotations = (service.get("metadata") or {}).get("annotations") or {}
        internal = (annotations.get("service.beta.kubernetes.io/aws-load-balancer-scheme") == "internal"
                    or annotations.get("service.beta.kubernetes.io/aws-load-balancer-internal") == "true")
        return CheckResult.PASSED if internal else CheckResult.FAILED


check_token = RayTokenAuth()
check_head = RayHeadTakesNoWork()
check_gpu = RayGpuLimits()
check_lb = RayNoPublicLoadBalancer()
