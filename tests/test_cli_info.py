"""``slidebank info`` and ``slidebank sample`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from slidebank.cli import app

runner = CliRunner()


def test_info_json_and_thumbnail(cmu_slide: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", str(cmu_slide), "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["slide_id"] == "cmu_small_region"
    assert report["mpp"] == 0.499 and report["mpp_source"] == "aperio"
    assert report["objective_power"] == 20.0 and report["vendor"] == "aperio"
    assert report["levels"][0] == {
        "level": 0,
        "width": 2220,
        "height": 2967,
        "downsample": 1.0,
        "mpp": 0.499,
    }
    with Image.open(report["thumbnail"]) as thumb:
        assert thumb.size == (round(2220 * 0.499 / 8), round(2967 * 0.499 / 8))
    assert "CMU-1" not in result.stdout and "label" not in result.stdout


def test_sample_then_info_table(tmp_path: Path) -> None:
    target = tmp_path / "demo.svs"
    result = runner.invoke(app, ["sample", str(target), "--width", "1200", "--height", "900"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["info", str(target), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "aperio" in result.stdout and "0.5" in result.stdout


def test_missing_mpp_is_a_clear_error_with_exit_code_2(tmp_path: Path) -> None:
    import numpy as np
    import tifffile

    path = tmp_path / "nores.tif"
    tifffile.imwrite(
        path,
        np.zeros((64, 64, 3), np.uint8),
        photometric="rgb",
        metadata=None,
        resolution=None,
        resolutionunit="NONE",
    )
    result = runner.invoke(app, ["info", str(path), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "MissingMPPError" in result.output and "--mpp" in result.output
    ok = runner.invoke(app, ["info", str(path), "--mpp", "0.5", "--json", "--out", str(tmp_path)])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["mpp_source"] == "override"
