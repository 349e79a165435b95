"""What slidebank actually receives when KubeRay submits each RayJob.

The submitter command is rebuilt as KubeRay v1.7.0 builds it and run under ``bash -ce``
with the submitter pod's environment as the kubelet would build it from the rendered
manifests (tests/_deploy_tools/kuberay_submitter.py); Ray's quoting and the head's shell
follow. The arguments are then parsed by slidebank's real command line. A variable that
the submitter pod lacks arrives as an empty string, which is what these tests catch.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import typer

from slidebank.cli import app
from tests._deploy_tools.fixtures import CLUSTER_ENV, DEPLOY, env_file, renders  # noqa: F401
from tests._deploy_tools.kuberay_submitter import pod_env, replay

JOB_ID_SUFFIX = "-x7k2q"  # kuberay_submitter's stand-in for KubeRay's random job id


def _job(
    renders: dict[str, list[dict[str, Any]]],  # noqa: F811
    overlay: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    (job,) = [d for d in renders[overlay] if d["kind"] == "RayJob"]
    return job, renders[""] + renders[overlay]  # the platform is applied first


def _parse(argv: list[str]) -> dict[str, Any]:
    """slidebank's own parser on ``argv`` (no command runs): the options it would use."""
    command: Any = typer.main.get_command(app)  # typer's own click group
    sub = command.commands[argv[0]]
    return dict(sub.make_context(argv[0], list(argv[1:])).params)


def test_ingest_job_gives_slidebank_the_slides_the_store_and_its_options(
    renders,  # noqa: F811
    tmp_path: Path,
) -> None:
    job, objects = _job(renders, "jobs/ingest")
    argv = replay(job, objects, tmp_path)
    assert argv[0] == "ingest" and "" not in argv, argv
    params = _parse(argv)
    cluster, run = env_file(CLUSTER_ENV), env_file(DEPLOY / "jobs" / "ingest" / "ingest.env")
    assert params["source"] == cluster["SLIDEBANK_SLIDES_URI"]
    assert params["store"] == cluster["SLIDEBANK_STORE_URI"]
    assert params["encoder"] == run["SLIDEBANK_ENCODER"]
    assert params["max_gpus"] == int(run["SLIDEBANK_MAX_GPUS"])
    assert params["gpu_wait"] == float(run["SLIDEBANK_GPU_WAIT_S"])
    # A failed slide does not fail the Ray job; the summary lands in the store, per job id.
    assert params["partial_ok"] is True
    assert params["summary"] == (
        f"{cluster['SLIDEBANK_STORE_URI'].rstrip('/')}/ingest-runs/"
        f"{job['metadata']['name']}{JOB_ID_SUFFIX}.json"
    )
    # --gpu-wait fails the run while the job's own deadline is still far off.
    assert params["gpu_wait"] < job["spec"]["activeDeadlineSeconds"]


def test_train_job_gives_slidebank_the_store_cohort_and_checkpoints(
    renders,  # noqa: F811
    tmp_path: Path,
) -> None:
    job, objects = _job(renders, "jobs/train")
    argv = replay(job, objects, tmp_path)
    assert argv[0] == "train" and "" not in argv, argv
    # The config file is the mounted ConfigMap's, on the head where the driver runs.
    argv[1] = str(_mounted_file(job, objects, Path(argv[1]), tmp_path))
    params = _parse(argv)
    overrides = dict(o.split("=", 1) for o in params["overrides"])
    store = env_file(CLUSTER_ENV)["SLIDEBANK_STORE_URI"]
    assert overrides["store"] == store
    assert overrides["cohort"] == f"{store.rstrip('/')}/cohorts/train.parquet"
    assert overrides["checkpoints"] == f"{store.rstrip('/')}/mil_runs"
    from training.mil.run_config import load_run_config

    config = load_run_config(params["config"], params["overrides"])  # every key is one it knows
    assert str(config.store) == store


def _mounted_file(
    job: dict[str, Any], objects: list[dict[str, Any]], path: Path, tmp: Path
) -> Path:
    """``path`` in the head container, from the ConfigMap volume mounted above it."""
    spec = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (mount,) = [
        m for m in spec["containers"][0]["volumeMounts"] if Path(m["mountPath"]) == path.parent
    ]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    (config_map,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
    ]
    local = tmp / path.name
    local.write_text(config_map["data"][path.name])
    return local


def test_a_submitter_without_the_values_is_caught(renders, tmp_path: Path) -> None:  # noqa: F811
    """The manifests before the fix: the submitter had no envFrom, so Ray received
    ``slidebank ingest '' --store '' ...``."""
    job, objects = _job(renders, "jobs/ingest")
    broken = copy.deepcopy(job)
    del broken["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["envFrom"]
    argv = replay(broken, objects, tmp_path)
    assert argv[1] == "" and argv[argv.index("--store") + 1] == ""


@pytest.mark.parametrize("overlay", ["jobs/ingest", "jobs/train", "dev"])
def test_every_ray_container_can_start(renders, overlay: str) -> None:  # noqa: F811
    """Every ConfigMap a Ray pod reads exists once the platform and the overlay are applied."""
    objects = renders[""] + renders[overlay]
    (run,) = [d for d in renders[overlay] if d["kind"] in ("RayJob", "RayCluster")]
    cluster = run["spec"].get("rayClusterSpec", run["spec"])
    templates = [
        cluster["headGroupSpec"]["template"],
        *(g["template"] for g in cluster["workerGroupSpecs"]),
    ]
    if run["kind"] == "RayJob":
        templates.append(run["spec"]["submitterPodTemplate"])
    for template in templates:
        for container in (
            template["spec"].get("initContainers", []) + template["spec"]["containers"]
        ):
            env = pod_env(container, objects, run["metadata"]["namespace"])
            assert env.get("SLIDEBANK_STORE_URI"), (overlay, container["name"])
