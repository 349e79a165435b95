"""Field names of the custom resources slidebank ships, for a typo check without the CRDs.

The KubeRay CRDs are ~4 MB of OpenAPI, and the Karpenter/Prometheus ones need a download;
an API server drops unknown fields of a CRD with only a warning, so a misspelt
``shutdownAfterJobFinish`` would silently keep a GPU cluster alive. These sets are the
fields of the versions we target (KubeRay v1.7.0 ``ray.io/v1`` types, Karpenter
``karpenter.sh/v1`` / ``karpenter.k8s.aws/v1``, Prometheus Operator ``monitoring.coreos.com/v1``).
Pod templates inside are checked separately with the Kubernetes schemas.
"""

from __future__ import annotations

from typing import Any

__all__ = ["unknown_fields"]

RAY_CLUSTER_SPEC = {
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "authOptions",
    "networkPolicy",
    "gcsFaultToleranceOptions",
    "headGroupSpec",
    "workerGroupSpecs",
    "suspend",
    "managedBy",
    "headServiceAnnotations",
    "upgradeStrategy",
    "historyServerOptions",
}
RAY_JOB_SPEC = {
    "entrypoint",
    "runtimeEnvYAML",
    "submissionMode",
    "shutdownAfterJobFinishes",
    "ttlSecondsAfterFinished",
    "activeDeadlineSeconds",
    "preRunningDeadlineSeconds",
    "backoffLimit",
    "deletionStrategy",
    "suspend",
    "clusterSelector",
    "rayClusterSpec",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "entrypointResources",
    "submitterPodTemplate",
    "submitterConfig",
    "jobId",
    "metadata",
    "managedBy",
}
HEAD_GROUP = {
    "rayStartParams",
    "template",
    "serviceType",
    "headService",
    "enableIngress",
    "suspend",
    "resources",
    "labels",
}
WORKER_GROUP = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "idleTimeoutSeconds",
    "priority",
    "rayStartParams",
    "template",
    "numOfHosts",
    "suspend",
    "scaleStrategy",
    "resources",
    "labels",
}
AUTOSCALER = {
    "version",
    "upscalingMode",
    "idleTimeoutSeconds",
    "resources",
    "env",
    "envFrom",
    "image",
    "imagePullPolicy",
    "securityContext",
    "volumeMounts",
}
AUTH = {"mode", "secretName", "enableK8sTokenAuth"}
NODEPOOL_SPEC = {"template", "disruption", "limits", "weight", "replicas"}
NODEPOOL_TEMPLATE_SPEC = {
    "nodeClassRef",
    "taints",
    "startupTaints",
    "requirements",
    "expireAfter",
    "terminationGracePeriod",
}
EC2NODECLASS_SPEC = {
    "role",
    "instanceProfile",
    "amiSelectorTerms",
    "amiFamily",
    "subnetSelectorTerms",
    "securityGroupSelectorTerms",
    "capacityReservationSelectorTerms",
    "instanceStorePolicy",
    "metadataOptions",
    "blockDeviceMappings",
    "userData",
    "tags",
    "kubelet",
    "associatePublicIPAddress",
    "detailedMonitoring",
    "context",
}
PODMONITOR_SPEC = {
    "selector",
    "namespaceSelector",
    "podMetricsEndpoints",
    "jobLabel",
    "podTargetLabels",
    "sampleLimit",
    "targetLimit",
    "attachMetadata",
    "labelLimit",
    "labelNameLengthLimit",
    "labelValueLengthLimit",
    "scrapeProtocols",
    "selectMechanism",
    "scrapeClass",
}


def _extra(obj: Any, allowed: set[str], where: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: expected a mapping"] if obj is not None else []
    return [f"{where}.{key}" for key in sorted(set(obj) - allowed)]


def _ray_cluster(spec: dict[str, Any], where: str) -> list[str]:
    out = _extra(spec, RAY_CLUSTER_SPEC, where)
    out += _extra(spec.get("autoscalerOptions"), AUTOSCALER, f"{where}.autoscalerOptions")
    out += _extra(spec.get("authOptions"), AUTH, f"{where}.authOptions")
    out += _extra(spec.get("headGroupSpec"), HEAD_GROUP, f"{where}.headGroupSpec")
    for i, group in enumerate(spec.get("workerGroupSpecs") or []):
        out += _extra(group, WORKER_GROUP, f"{where}.workerGroupSpecs[{i}]")
    return out


def unknown_fields(doc: dict[str, Any]) -> list[str]:
    """Field paths in ``doc`` that its kind does not define (empty: nothing unknown)."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "RayCluster":
        return _ray_cluster(spec, "spec")
    if kind == "RayJob":
        return _extra(spec, RAY_JOB_SPEC, "spec") + _ray_cluster(
            spec.get("rayClusterSpec") or {}, "spec.rayClusterSpec"
        )
    if kind == "NodePool":
        return _extra(spec, NODEPOOL_SPEC, "spec") + _extra(
            (spec.get("template") or {}).get("spec"), NODEPOOL_TEMPLATE_SPEC, "spec.template.spec"
        )
    if kind == "EC2NodeClass":
        return _extra(spec, EC2NODECLASS_SPEC, "spec")
    if kind == "PodMonitor":
        return _extra(spec, PODMONITOR_SPEC, "spec")
    return []
