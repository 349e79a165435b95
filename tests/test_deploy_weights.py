"""Encoder weights reach the Ray pods: the ingest job's init container, run as the pod runs
it (its command and its environment from the rendered manifests), copies them from the
weights prefix to where slidebank's weight resolver looks, and the main containers look
there. The object store is a local folder (``file://``), as fsspec treats both alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._deploy_tools.fixtures import ROOT, renders  # noqa: F401
from tests._deploy_tools.kuberay_submitter import pod_env


def _pods(renders: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:  # noqa: F811
    (job,) = [d for d in renders["jobs/ingest"] if d["kind"] == "RayJob"]
    cluster = job["spec"]["rayClusterSpec"]
    return [
        cluster["headGroupSpec"]["template"],
        *(g["template"] for g in cluster["workerGroupSpecs"]),
    ]


def test_every_ingest_pod_fetches_weights_where_the_encoder_looks(renders, tmp_path: Path) -> None:  # noqa: F811
    from features.encoders.registry import get_encoder_spec
    from features.encoders.weights import resolve_weights

    bucket = tmp_path / "bucket" / "weights"
    (bucket / "uni").mkdir(parents=True)
    (bucket / "uni.safetensors").write_bytes(b"\0" * 1024)
    (bucket / "virchow").mkdir()
    (bucket / "virchow" / "pytorch_model.bin").write_bytes(b"\1" * 64)
    objects = renders[""] + renders["jobs/ingest"]
    for i, pod in enumerate(_pods(renders)):
        (init,) = pod["spec"]["initContainers"]
        main = pod["spec"]["containers"][
            0
        ]  # the Ray container (KubeRay's index 0); then the log shipper
        shared = {m["name"] for m in init["volumeMounts"]} & {
            m["name"] for m in main["volumeMounts"]
        }
        assert shared, "the init container writes to a volume the Ray container reads"
        env = pod_env(init, objects, "slidebank")
        assert env["SLIDEBANK_WEIGHTS_URI"].startswith("s3://")
        local = tmp_path / f"node{i}"
        env.update(
            SLIDEBANK_WEIGHTS_URI=bucket.as_uri(),
            SLIDEBANK_ENCODER="uni",
            SLIDEBANK_WEIGHTS_DIR=str(local),
            PATH="/usr/bin:/bin",
        )
        command = [
            sys.executable if init["command"][0] == "python" else init["command"][0],
            *init["command"][1:],
        ]
        subprocess.run(command, env=env, cwd=ROOT, check=True, timeout=120, capture_output=True)
        assert (local / "uni.safetensors").stat().st_size == 1024
        assert not (local / "virchow").exists(), "only the run's encoder is copied"
        main_env = pod_env(main, objects, "slidebank")
        assert main_env["SLIDEBANK_WEIGHTS_DIR"] == env_dir(init)
        assert main_env.get("HF_HOME", "").startswith(env_dir(init)), (
            "hub downloads land on the same disk"
        )
        found = _resolve(get_encoder_spec("uni"), local, resolve_weights)
        assert found == local / "uni.safetensors"


def env_dir(container: dict[str, Any]) -> str:
    return next(v["value"] for v in container["env"] if v["name"] == "SLIDEBANK_WEIGHTS_DIR")


def _resolve(spec: Any, weights_dir: Path, resolve: Any) -> Path:
    import os

    saved = os.environ.get("SLIDEBANK_WEIGHTS_DIR")
    os.environ["SLIDEBANK_WEIGHTS_DIR"] = str(weights_dir)
    try:
        return Path(resolve(spec).path)
    finally:
        if saved is None:
            os.environ.pop("SLIDEBANK_WEIGHTS_DIR")
        else:
            os.environ["SLIDEBANK_WEIGHTS_DIR"] = saved


def test_a_folder_of_hub_files_and_a_rerun(tmp_path: Path) -> None:
    from infra.fetch_weights import fetch_weights

    source = tmp_path / "weights" / "timm_vit_small" / "sub"
    source.mkdir(parents=True)
    (source / "model.safetensors").write_bytes(b"x" * 10)
    dest = tmp_path / "local"
    copied = fetch_weights((tmp_path / "weights").as_uri(), "timm:vit_small", dest)
    assert copied == [dest / "timm_vit_small" / "sub" / "model.safetensors"]
    before = copied[0].stat().st_mtime_ns
    assert fetch_weights((tmp_path / "weights").as_uri(), "timm:vit_small", dest) == copied
    assert copied[0].stat().st_mtime_ns == before, "a file already there is not fetched again"


@pytest.mark.parametrize("unset", ["SLIDEBANK_WEIGHTS_URI", "SLIDEBANK_ENCODER"])
def test_nothing_to_fetch_is_not_an_error(tmp_path: Path, unset: str) -> None:
    from infra.fetch_weights import main

    env = {
        "SLIDEBANK_WEIGHTS_URI": tmp_path.as_uri(),
        "SLIDEBANK_ENCODER": "handcrafted-he-v1",
        "SLIDEBANK_WEIGHTS_DIR": str(tmp_path / "w"),
    }
    assert main({k: v for k, v in env.items() if k != unset}) == 0
    assert main(env) == 0  # a built-in encoder has no weights under the prefix
