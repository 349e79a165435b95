"""Bad inputs: each gives a typed error naming the slide, locally and over S3, without hanging."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from infra.errors import (
    MissingMPPError,
    SlideCorruptError,
    SlideError,
    SlideNotFoundError,
    SlideOpenError,
)
from ingest.slides import ScratchSpace, open_slide

pytestmark = pytest.mark.timeout(60)  # "no hang": each case must finish well inside this


def _truncated(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * 0.6)])


def _random_bytes(dst: Path) -> None:
    dst.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())


def _jpeg_as_tif(dst: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(dst, format="JPEG")


def _tiff_without_resolution(dst: Path) -> None:
    pixels = np.full((512, 512, 3), 200, np.uint8)
    tifffile.imwrite(
        dst,
        pixels,
        tile=(256, 256),
        compression="jpeg",
        photometric="rgb",
        metadata=None,
        resolution=None,
        resolutionunit="NONE",
    )


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, synthetic_svs) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    files = {
        "truncated": root / "truncated.svs",
        "random": root / "random.svs",
        "empty": root / "empty.svs",
        "jpeg": root / "photo.tif",
        "no_resolution": root / "nores.tif",
    }
    _truncated(synthetic_svs.path, files["truncated"])
    _random_bytes(files["random"])
    files["empty"].write_bytes(b"")
    _jpeg_as_tif(files["jpeg"])
    _tiff_without_resolution(files["no_resolution"])
    return files


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def locate(request, bad_files, tmp_path):
    """Maps a bad-file name to (uri, open kwargs) on local disk or in a moto bucket."""
    if request.param == "local":
        return lambda name: (
            str(bad_files[name]) if name != "missing" else str(tmp_path / "missing.svs"),
            {},
        )
    import s3fs

    options = request.getfixturevalue("s3_options")
    fs = s3fs.S3FileSystem(**options)
    bucket = request.getfixturevalue("s3_bucket")
    for path in bad_files.values():
        fs.put(str(path), f"{bucket}/{path.name}")
    scratch = ScratchSpace(tmp_path / "scratch", 2**30)

    def where(name: str):
        key = "missing.svs" if name == "missing" else bad_files[name].name
        return f"{bucket}/{key}", {"storage_options": options, "scratch": scratch}

    return where


def _open(locate, name: str):
    uri, kwargs = locate(name)
    return uri, lambda: open_slide(uri, **kwargs)


def test_truncated_slide(locate) -> None:
    uri, go = _open(locate, "truncated")
    with pytest.raises(SlideCorruptError, match="truncated") as info:
        go()
    assert info.value.slide == uri and isinstance(info.value, OSError)


@pytest.mark.parametrize("name", ["random", "jpeg"])
def test_not_a_slide_chains_every_backend(locate, name: str) -> None:
    uri, go = _open(locate, name)
    with pytest.raises(SlideOpenError) as info:
        go()
    err = info.value
    assert err.slide == uri and uri in str(err)
    group = err.__cause__
    assert isinstance(group, ExceptionGroup) and len(group.exceptions) >= 1
    tried = [note for e in group.exceptions for note in getattr(e, "__notes__", [])]
    assert all(f"backend: {b}" in tried for b in _expected_backends(uri))
    for backend in _expected_backends(uri):
        assert backend in str(err)


def _expected_backends(uri: str) -> list[str]:
    # Remote "auto" stages, so the local-file backends are tried there too.
    return ["cucim", "openslide", "tiffslide"]


def test_empty_file(locate) -> None:
    uri, go = _open(locate, "empty")
    with pytest.raises(SlideCorruptError, match="empty") as info:
        go()
    assert info.value.slide == uri


def test_missing_object(locate) -> None:
    uri, go = _open(locate, "missing")
    with pytest.raises(SlideNotFoundError) as info:
        go()
    assert isinstance(info.value, FileNotFoundError) and info.value.slide == uri


def test_tiff_without_resolution_needs_an_explicit_mpp(locate) -> None:
    uri, kwargs = locate("no_resolution")
    with pytest.raises(MissingMPPError, match="--mpp") as info:
        open_slide(uri, **kwargs)
    assert isinstance(info.value, ValueError) and info.value.slide == uri
    with open_slide(uri, mpp=0.5, **kwargs) as slide:
        assert (slide.mpp, slide.metadata.mpp_source) == (0.5, "override")
    with open_slide(uri, require_mpp=False, **kwargs) as slide:
        assert slide.metadata.mpp is None
        with pytest.raises(MissingMPPError):
            _ = slide.mpp


def test_errors_are_catchable_as_builtins_and_pickle(tmp_path: Path) -> None:
    import pickle

    err = SlideCorruptError("s3://b/x.svs", "truncated")
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, SlideError) and isinstance(clone, OSError)
    assert (clone.slide, clone.reason) == ("s3://b/x.svs", "truncated")


def test_a_bad_read_is_a_typed_error_naming_the_slide(tmp_path: Path, synthetic_svs) -> None:
    from infra.errors import SlideReadError

    copy = tmp_path / "s.svs"
    copy.write_bytes(synthetic_svs.path.read_bytes())
    slide = open_slide(str(copy))
    slide.close()
    with pytest.raises(SlideReadError, match="closed"):
        slide.read_region((0, 0), 0, (8, 8))
    with open_slide(str(copy)) as slide, pytest.raises(ValueError, match="level 9"):
        slide.read_region((0, 0), 9, (8, 8))
