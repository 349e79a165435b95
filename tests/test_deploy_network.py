"""Who can reach the Ray pods once the NetworkPolicy is enforced, and that it is enforced.

``admitted`` evaluates Kubernetes NetworkPolicy ingress semantics (a pod selected by any
policy accepts a connection only if some rule of one of them admits its source and port;
rules are ORed, a rule's ``from`` peers are ORed, a peer's namespace and pod selectors are
ANDed) over the rendered policies, for connections the deployment depends on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests._deploy_tools.fixtures import rendered, renders  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
NS_LABEL = "kubernetes.io/metadata.name"


def _matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (
            (op == "In" and value not in expr["values"])
            or (op == "NotIn" and value in expr["values"])
            or (op == "Exists" and value is None)
            or (op == "DoesNotExist" and value is not None)
        ):
            return False
    return True


def _peer_admits(
    peer: dict[str, Any], policy_ns: str, src_ns: str, src_labels: dict[str, str]
) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic inside the cluster is judged by selectors
    if "namespaceSelector" in peer:
        if not _matches(peer["namespaceSelector"], {NS_LABEL: src_ns}):
            return False
    elif src_ns != policy_ns:
        return False
    return _matches(peer.get("podSelector"), src_labels)


def admitted(
    policies: list[dict[str, Any]],
    dst_ns: str,
    dst_labels: dict[str, str],
    port: int,
    src_ns: str,
    src_labels: dict[str, str],
) -> bool:
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == dst_ns
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _matches(p["spec"]["podSelector"], dst_labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_admits(peer, dst_ns, src_ns, src_labels) for peer in peers):
                return True
    return False


def _ray_head_labels(job: dict[str, Any]) -> dict[str, str]:
    """A head pod's labels: the template's plus what KubeRay adds."""
    template = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    return {
        **template["metadata"]["labels"],
        "ray.io/node-type": "head",
        "ray.io/cluster": "slidebank-ingest-abcde",
    }


@pytest.fixture(scope="module")
def policies(renders) -> list[dict[str, Any]]:  # noqa: F811
    return [d for d in renders[""] if d["kind"] == "NetworkPolicy"]


@pytest.fixture(scope="module")
def head(renders) -> dict[str, str]:  # noqa: F811
    (job,) = [d for d in renders["jobs/ingest"] if d["kind"] == "RayJob"]
    return _ray_head_labels(job)


@pytest.mark.parametrize("port", [8265, 6379])
def test_the_kuberay_operator_reaches_every_head(policies, head, port: int) -> None:
    # KubeRay polls the dashboard for job status and GCS health; 300 s without an answer
    # fails the RayJob.
    operator = {"app.kubernetes.io/name": "kuberay-operator"}
    assert admitted(policies, "slidebank", head, port, "kuberay-system", operator)


def test_the_submitter_and_workers_reach_the_head(policies, head, renders) -> None:  # noqa: F811
    (job,) = [d for d in renders["jobs/ingest"] if d["kind"] == "RayJob"]
    submitter = job["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["metadata"]["labels"]
    assert admitted(policies, "slidebank", head, 8265, "slidebank", submitter)
    assert admitted(policies, "slidebank", head, 6379, "slidebank", worker)


def test_prometheus_scrapes_and_strangers_are_kept_out(policies, head) -> None:
    assert admitted(
        policies, "slidebank", head, 8080, "monitoring", {"app.kubernetes.io/name": "prometheus"}
    )
    assert not admitted(
        policies, "slidebank", head, 8265, "monitoring", {"app.kubernetes.io/name": "prometheus"}
    )
    assert not admitted(policies, "slidebank", head, 8265, "default", {"app": "anything"})
    assert not admitted(policies, "slidebank", head, 10001, "kuberay-system", {})


def test_the_policy_as_it_was_would_block_the_operator(policies, head) -> None:
    """The rules before the fix admitted only Ray pods and Prometheus."""
    old = [
        {
            **p,
            "spec": {
                **p["spec"],
                "ingress": [r for r in p["spec"]["ingress"] if "kuberay-system" not in str(r)],
            },
        }
        for p in policies
    ]
    assert not admitted(old, "slidebank", head, 8265, "kuberay-system", {})


def test_the_vpc_cni_enforces_network_policies() -> None:
    """Without the VPC CNI's policy agent the NetworkPolicy restricts nothing."""
    import json

    from tests.test_deploy_terraform import _blocks, _load

    eks = _blocks(_load(ROOT / "terraform"), "module")["eks"]
    cni = eks["addons"]["vpc-cni"]
    values = cni["configuration_values"]
    # python-hcl2 keeps a function call as its source text: jsonencode({...}).
    assert "enableNetworkPolicy" in values and '"true"' in values, values
    assert json.dumps(cni).count("enableNetworkPolicy") == 1
