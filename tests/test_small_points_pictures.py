"""Issue 30 item 10, what was left: ``info`` writes nothing unless asked; the tissue
overlay names the size of the pixels it shows."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from slidebank.cli import app

runner = CliRunner()


def test_info_creates_no_folder_unless_asked(tmp_path, monkeypatch):
    slide = tmp_path / "slides" / "demo.svs"
    assert (
        runner.invoke(app, ["sample", str(slide), "--width", "800", "--height", "600"]).exit_code
        == 0
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["info", str(slide), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["thumbnail"] is None
    assert list(work.iterdir()) == []  # no ./slidebank-out/
    table = runner.invoke(app, ["info", str(slide)])
    assert table.exit_code == 0 and "not written" in table.stdout and list(work.iterdir()) == []
    asked = runner.invoke(app, ["info", str(slide), "--json", "--out", "thumbs"])
    assert asked.exit_code == 0
    assert (work / "thumbs" / "demo" / "thumbnail.png").exists()


def test_overlay_caption_states_the_pixels_shown(tmp_path):
    from ingest.slides import open_slide
    from ingest.tiling.plan import plan_slide
    from ingest.tissue._legend import pixel_caption
    from ingest.tissue.overlay import _scale_for
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    path = tmp_path / "small.tif"
    write_synthetic_slide(
        path,
        SyntheticSlideSpec(
            width=2048, height=1536, mpp=0.5, seed=3, downsamples=(1, 4), style="tiff"
        ),
    )
    with open_slide(str(path)) as slide:
        tissue, _ = plan_slide(slide, device="cpu")
    scale = _scale_for(tissue.mask.shape, 1024, 2048)  # what render_overlay enlarges by
    assert scale > 1
    caption = pixel_caption(tissue, tissue.mpp / scale)
    assert caption.startswith(f"image pixels {tissue.mpp:.1f} µm, drawn {scale:.0f}× enlarged")
    assert "image at 1.0" not in caption
    # A large slide shrunk to fit: the pixels shown are the screen pixels.
    assert pixel_caption(tissue, tissue.mpp * 4).startswith(f"image pixels {tissue.mpp * 4:.1f} µm")
