"""Issue 17, bad input from an unlucky user: every bad manifest row reported and the good
ones kept, MPP checked before anything starts, precise messages, no file bytes in errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from features.store import FeatureStore, SlideInfo, SlideKey
from infra.errors import ConfigError, SlideCorruptError, SlideOpenError
from ingest.pipeline.sources import ManifestError, SlideSource, load_listing, load_sources
from ingest.slides import open_slide
from tests._support.store import tile_payload


def _manifest(tmp_path: Path, rows: list[str]) -> str:
    path = tmp_path / "manifest.csv"
    path.write_text("uri,slide_id,mpp\n" + "\n".join(rows) + "\n")
    return str(path)


def test_every_bad_row_is_reported_and_good_rows_kept(tmp_path: Path) -> None:
    manifest = _manifest(
        tmp_path,
        [
            "a.svs,good-1,",  # row 2: fine, metadata MPP
            "b.svs,../etc,",  # row 3: invalid id
            "c.svs,good-1,",  # row 4: repeats row 2
            "d.svs,GOOD-1,",  # row 5: differs only by case
            "e.svs,nan-mpp,nan",  # row 6: nan is not "missing"
            "f.svs,huge-mpp,1e9",  # row 7: outside 0.05-50
            "g.svs,word-mpp,abc",  # row 8: not a number
            "h.svs,good-2,0.25",  # row 9: fine, override
        ],
    )
    listing = load_listing(manifest)
    assert [(s.slide_id, s.mpp) for s in listing.sources] == [("good-1", None), ("good-2", 0.25)]
    by_row = {r.where: r.reason for r in listing.rejected}
    assert sorted(by_row) == [f"row {n}" for n in (3, 4, 5, 6, 7, 8)]
    assert "repeats row 2" in by_row["row 4"]
    assert "differs only by case" in by_row["row 5"]
    assert "nan" in by_row["row 6"] and "1e+09" in by_row["row 7"] and "abc" in by_row["row 8"]
    with pytest.raises(ManifestError) as info:  # the strict form names every row, not the first
        load_sources(manifest)
    assert all(f"row {n}:" in str(info.value) for n in (3, 4, 5, 6, 7, 8))


def test_force_mpp_lifts_the_range_but_not_nan(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, ["a.svs,wide,80", "b.svs,nan-mpp,NaN"])
    listing = load_listing(manifest, force_mpp=True)
    assert [(s.slide_id, s.mpp) for s in listing.sources] == [("wide", 80.0)]
    assert [r.where for r in listing.rejected] == ["row 3"]


def test_listing_refuses_ids_equal_up_to_case(tmp_path: Path) -> None:
    for name in ("Slide-A.svs", "slide-a.tif"):
        (tmp_path / name).write_bytes(b"x")
    listing = load_listing(str(tmp_path))
    assert len(listing.sources) == 1 and len(listing.rejected) == 1
    assert "case" in listing.rejected[0].reason


def test_target_mpp_is_checked_before_ray_starts(tmp_path: Path) -> None:
    import ray

    from ingest.pipeline.config import IngestConfig
    from ingest.tiling.config import TilingConfig
    from slidebank.ingest_api import ingest

    manifest = _manifest(tmp_path, ["a.svs,a,"])
    was_up = ray.is_initialized()
    with pytest.raises(ConfigError, match="1e-09 µm/px is outside"):
        ingest(
            manifest,
            str(tmp_path / "store"),
            config=IngestConfig(tiling=TilingConfig(target_mpp=1e-9)),
        )
    assert ray.is_initialized() == was_up and not (tmp_path / "store").exists()


def test_changed_mpp_override_is_not_skipped(tmp_path: Path) -> None:
    from ingest.pipeline.runner import IngestResult, _pending

    store = FeatureStore.open(str(tmp_path / "store"), create=True)
    info = SlideInfo(source_uri="a.svs", mpp=0.5, mpp_source="override", code_version="t")
    store.commit([store.write_slide(SlideKey("a", "enc", "cfg"), info, [tile_payload(3)])])
    result = IngestResult("r", "cfg", "enc")

    def pending(mpp):
        return [
            s.slide_id
            for s in _pending(
                [SlideSource("a.svs", "a", mpp=mpp)], store, "enc", "cfg", False, result
            )
        ]

    assert pending(0.5) == []  # same override: skipped (done)
    assert pending(0.25) == ["a"]  # changed override: redone
    assert pending(None) == ["a"]  # override removed: redone from the metadata


# ---- precise messages ------------------------------------------------------------------------
def test_fifo_is_named_not_called_empty(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.svs"
    os.mkfifo(fifo)
    with pytest.raises(SlideOpenError, match="is a FIFO"):
        open_slide(str(fifo))


def test_dev_zero_is_named_a_device() -> None:
    with pytest.raises(SlideOpenError, match="is a character device"):
        open_slide("/dev/zero")


def test_truncated_slide_says_truncated(synthetic_svs, tmp_path: Path) -> None:
    data = Path(synthetic_svs.path).read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(SlideCorruptError, match="truncated"):
        open_slide(str(cut))


def test_connection_refused_is_not_no_such_object() -> None:
    options = {
        "endpoint_url": "http://127.0.0.1:9",
        "key": "k",
        "secret": "s",
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }
    with pytest.raises(SlideOpenError, match="cannot reach the storage endpoint") as info:
        open_slide("s3://bucket/slide.svs", storage_options=options)
    assert not isinstance(info.value, FileNotFoundError)


def test_error_never_quotes_file_bytes(tmp_path: Path) -> None:
    fake = tmp_path / "passwd.svs"
    fake.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(SlideOpenError) as info:
        open_slide(str(fake))
    assert "root" not in str(info.value).replace(str(tmp_path), "")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_is_a_typed_error_before_the_store_exists(
    tmp_path: Path, damage: str
) -> None:
    import torch
    from safetensors.torch import save_file

    from infra.errors import WeightsError
    from ingest.pipeline.config import IngestConfig
    from slidebank.ingest_api import ingest

    weights = tmp_path / "model.safetensors"
    save_file({"head.weight": torch.zeros(64, 8)}, str(weights))
    data = weights.read_bytes()
    weights.write_bytes(
        data[: len(data) // 2] if damage == "truncate" else b"\x10" + b"\x00" * 7 + b"{not json}"
    )
    manifest = _manifest(tmp_path, ["a.svs,a,"])
    with pytest.raises(WeightsError, match=r"model\.safetensors: corrupt safetensors file"):
        ingest(
            manifest,
            str(tmp_path / "store"),
            config=IngestConfig(encoder="timm:resnet18", weights=str(weights)),
        )
    assert not (tmp_path / "store").exists()


# ---- scratch: private, cleaned ----------------------------------------------------------------
def _stage_one(space, tmp_path: Path):
    import fsspec

    from infra.storage import object_info

    source = tmp_path / "remote.svs"
    source.write_bytes(b"slide bytes" * 100)
    fs = fsspec.filesystem("file")
    return space.stage(fs, str(source), object_info(fs, str(source)), "remote.svs", ".svs")


def test_scratch_folders_are_private_and_removed_when_empty(tmp_path: Path) -> None:
    import stat

    from ingest.slides.staging import ScratchSpace

    base = tmp_path / "scratch"
    space = ScratchSpace(base)
    staged = _stage_one(space, tmp_path)
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert stat.S_IMODE(space.root.stat().st_mode) == 0o700
    space.release(staged)
    space.clear()
    assert not space.root.exists(), "an empty per-process folder must not pile up"


def test_stale_scratch_of_dead_processes_is_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from ingest.slides.staging import ScratchSpace

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    base = tmp_path / "scratch"
    stale = base / f"p{dead.stdout.strip()}"
    stale.mkdir(parents=True)
    (stale / "left-behind.svs").write_bytes(b"x")
    space = ScratchSpace(base)
    _stage_one(space, tmp_path)
    assert not stale.exists()


def test_scratch_base_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    from infra.errors import ScratchSpaceError
    from ingest.slides.staging import ScratchSpace

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "scratch").symlink_to(elsewhere)
    with pytest.raises(ScratchSpaceError, match="symlink"):
        _stage_one(ScratchSpace(tmp_path / "scratch"), tmp_path)
