"""Replay a RayJob's submission as KubeRay v1.7.0 does it, offline, to see what Ray runs.

In ``K8sJobMode`` KubeRay gives the submitter pod's first container
``/bin/bash -ce -- "<words joined by spaces>"`` (``configureSubmitterContainer`` in
``rayjob_controller.go``, ``BuildJobSubmitCommand`` in ``common/job.go``; the entrypoint is
one unquoted word there, so the submitter's shell expands it), and appends
``PYTHONUNBUFFERED``, ``RAY_DASHBOARD_ADDRESS``, ``RAY_JOB_SUBMISSION_ID`` and, with token
auth, ``RAY_AUTH_MODE`` and ``RAY_AUTH_TOKEN`` to its environment. ``ray job submit``
then ``shlex.join``s the words after ``--`` (``ray/dashboard/modules/job/cli.py``), and
the job supervisor on the head runs that string with ``shell=True``.

:func:`replay` runs exactly that with a ``ray`` on ``PATH`` that records its arguments,
then runs the recorded entrypoint through ``/bin/sh -c`` with a ``slidebank`` that records
its own: the arguments slidebank would receive on the head.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["pod_env", "replay", "submit_command"]

_HEALTH = (
    "python -c \"import urllib.request; r=urllib.request.urlopen('%s', timeout=%d); "
    "exit(0 if b'success' in r.read() else 1)\""
)

_RECORDER = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
if name == "ray" and args[:2] == ["job", "status"]:
    sys.exit(1)  # not submitted yet: the submitter goes on to submit
if name == "ray" and args[:2] == ["job", "logs"]:
    sys.exit(0)
with open(os.environ["RECORD_TO"], "a") as out:
    out.write(json.dumps({{"program": name, "args": args}}) + "\\n")
"""


def submit_command(job: dict[str, Any], dashboard_url: str, job_id: str) -> list[str]:
    """The submitter container's command for ``job`` (KubeRay v1.7.0, K8sJobMode)."""
    address = dashboard_url if dashboard_url.startswith("http://") else "http://" + dashboard_url
    spec = job["spec"]
    words = [
        "until",
        _HEALTH % (f"{address}/api/gcs_healthz", 10),
        ">/dev/null",
        "2>&1",
        ";",
        "do",
        "echo",
        json.dumps(f"Waiting for Ray Dashboard GCS to become healthy at {address} ..."),
        ";",
        "sleep",
        "2",
        ";",
        "done",
        ";",
        "if",
        "!",
        "ray",
        "job",
        "status",
        "--address",
        address,
        job_id,
        ">/dev/null",
        "2>&1",
        ";",
        "then",
        "ray",
        "job",
        "submit",
        "--address",
        address,
        "--no-wait",
    ]
    if spec.get("runtimeEnvYAML"):
        raise NotImplementedError("runtimeEnvYAML is not replayed")
    words += ["--submission-id", job_id]
    if spec.get("entrypointNumCpus"):
        words += ["--entrypoint-num-cpus", f"{float(spec['entrypointNumCpus']):f}"]
    if spec.get("entrypointNumGpus"):
        words += ["--entrypoint-num-gpus", f"{float(spec['entrypointNumGpus']):f}"]
    words += [
        "--",
        spec["entrypoint"].strip(),
        ";",
        "fi",
        ";",
        "ray",
        "job",
        "logs",
        "--address",
        address,
        "--follow",
        job_id,
    ]
    return ["/bin/bash", "-ce", "--", " ".join(words)]


def _lookup(
    objects: list[dict[str, Any]], kind: str, name: str, namespace: str
) -> dict[str, Any] | None:
    return next(
        (
            o
            for o in objects
            if o["kind"] == kind
            and o["metadata"]["name"] == name
            and o["metadata"].get("namespace", namespace) == namespace
        ),
        None,
    )


def pod_env(
    container: dict[str, Any],
    objects: list[dict[str, Any]],
    namespace: str,
    secrets: dict[str, dict[str, str]] | None = None,
) -> dict[str, str]:
    """A container's environment as the kubelet builds it: ``envFrom`` in order, then
    ``env`` (with ``$(VAR)`` references); a missing non-optional source is an error, as
    it keeps the pod from starting."""
    secrets = secrets or {}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", source["configMapRef"])
            if "configMapRef" in source
            else ("Secret", source["secretRef"])
        )
        data = (
            secrets.get(ref["name"])
            if kind == "Secret"
            else (_lookup(objects, kind, ref["name"], namespace) or {}).get("data")
        )
        if data is None:
            if ref.get("optional"):
                continue
            raise LookupError(
                f"{kind} {namespace}/{ref['name']} does not exist: the pod cannot start"
            )
        env.update({source.get("prefix", "") + k: str(v) for k, v in data.items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = _expand_refs(str(var["value"]), env)
        elif "valueFrom" in var:
            value = _value_from(var["valueFrom"], objects, namespace, secrets)
            if value is not None:
                env[var["name"]] = value
    return env


def _expand_refs(value: str, env: dict[str, str]) -> str:
    for key, val in env.items():
        value = value.replace(f"$({key})", val)
    return value


def _value_from(
    source: dict[str, Any],
    objects: list[dict[str, Any]],
    namespace: str,
    secrets: dict[str, dict[str, str]],
) -> str | None:
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        data = secrets.get(ref["name"])
    elif "configMapKeyRef" in source:
        ref = source["configMapKeyRef"]
        data = (_lookup(objects, "ConfigMap", ref["name"], namespace) or {}).get("data")
    else:
        return None
    if data is None or ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise LookupError(f"{ref['name']}/{ref['key']} does not exist: the pod cannot start")
    return str(data[ref["key"]])


def replay(job: dict[str, Any], objects: list[dict[str, Any]], workdir: Path) -> list[str]:
    """The argv (after the program name) that the job's entrypoint gives its program on the
    head: the submitter's command under its pod environment, Ray's quoting, the head's shell."""
    namespace = job["metadata"]["namespace"]
    name = job["metadata"]["name"]
    job_id, dashboard = (
        f"{name}-x7k2q",
        f"{name}-raycluster-abcde-head-svc.{namespace}.svc.cluster.local:8265",
    )
    container = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]
    env = pod_env(container, objects, namespace)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "RAY_DASHBOARD_ADDRESS": dashboard,
            "RAY_JOB_SUBMISSION_ID": job_id,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": "t0ken",
        }
    )
    bin_dir = workdir / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for program in ("ray", "slidebank"):
        (bin_dir / program).write_text(_RECORDER.format(python=sys.executable))
        (bin_dir / program).chmod(0o755)
    (bin_dir / "python").write_text("#!/bin/sh\nexit 0\n")  # the health probe: the head is up
    (bin_dir / "python").chmod(0o755)
    record = workdir / "record.jsonl"
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(workdir), "RECORD_TO": str(record)}
    subprocess.run(
        submit_command(job, dashboard, job_id),
        env={**base, **env},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    submitted = [json.loads(line) for line in record.read_text().splitlines()]
    (call,) = [c for c in submitted if c["program"] == "ray" and c["args"][:2] == ["job", "submit"]]
    entrypoint = shlex.join(call["args"][call["args"].index("--") + 1 :])  # what Ray's CLI sends
    record.unlink()
    # The head's environment is a different pod's; the entrypoint must not depend on it.
    subprocess.run(
        ["/bin/sh", "-c", entrypoint], env={**base}, check=True, timeout=60, cwd=os.fspath(workdir)
    )
    (run,) = [json.loads(line) for line in record.read_text().splitlines()]
    return list(run["args"])
