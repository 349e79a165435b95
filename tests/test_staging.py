"""Staging remote slides: bounded scratch, size/ETag/MD5 checks, clean-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import s3fs

from infra.errors import ScratchSpaceError, StagingError
from infra.storage import object_info
from ingest.slides import ScratchSpace, open_slide

pytestmark = pytest.mark.s3


@pytest.fixture
def staged_uris(s3_bucket: str, s3_options: dict, synthetic_svs, synthetic_tiff) -> dict:
    fs = s3fs.S3FileSystem(**s3_options)
    fs.put(str(synthetic_svs.path), f"{s3_bucket}/a.svs")
    fs.put(str(synthetic_tiff.path), f"{s3_bucket}/b.tif")
    return {"a": f"{s3_bucket}/a.svs", "b": f"{s3_bucket}/b.tif", "fs": fs}


def test_staged_file_is_removed_on_close(staged_uris, s3_options, tmp_path: Path) -> None:
    scratch = ScratchSpace(tmp_path, 2**30)
    with open_slide(
        staged_uris["a"], storage_options=s3_options, strategy="stage", scratch=scratch
    ) as slide:
        assert slide.metadata.access == "stage" and scratch.used_bytes() > 0
    assert scratch.used_bytes() == 0


def test_scratch_is_bounded_and_evicts_unused_files(
    staged_uris, s3_options, tmp_path: Path
) -> None:
    fs = staged_uris["fs"]
    size_a = fs.size(staged_uris["a"])
    size_b = fs.size(staged_uris["b"])
    scratch = ScratchSpace(tmp_path, max(size_a, size_b) + 10, keep=True)
    # a is pinned while open: b cannot evict it, and both do not fit.
    with (
        open_slide(staged_uris["a"], storage_options=s3_options, strategy="stage", scratch=scratch),
        pytest.raises(ScratchSpaceError, match="in use"),
    ):
        open_slide(staged_uris["b"], storage_options=s3_options, strategy="stage", scratch=scratch)
    # closed and kept: b evicts a (least recently used, unpinned)
    with open_slide(
        staged_uris["b"], storage_options=s3_options, strategy="stage", scratch=scratch
    ):
        assert scratch.used_bytes() == size_b


def test_too_big_for_scratch_streams_in_auto_mode(staged_uris, s3_options, tmp_path: Path) -> None:
    scratch = ScratchSpace(tmp_path, 1000)
    with open_slide(staged_uris["a"], storage_options=s3_options, scratch=scratch) as slide:
        assert slide.metadata.access == "stream" and slide.metadata.reader == "tiffslide"
    with pytest.raises(ScratchSpaceError):
        open_slide(staged_uris["a"], storage_options=s3_options, strategy="stage", scratch=scratch)


def test_corrupted_download_is_detected(
    staged_uris, s3_options, tmp_path: Path, monkeypatch
) -> None:
    fs = s3fs.S3FileSystem(**s3_options)
    path = staged_uris["a"].removeprefix("s3://")
    real = fs.cat_file

    def flaky(p, start=None, end=None, **kw):
        data = bytearray(real(p, start=start, end=end, **kw))
        if start == 0:
            data[100] ^= 0xFF  # one flipped bit-pattern in transit
        return bytes(data)

    monkeypatch.setattr(fs, "cat_file", flaky)
    info = object_info(fs, path)
    scratch = ScratchSpace(tmp_path, 2**30, part_size=2**16)
    with pytest.raises(StagingError, match="MD5"):
        scratch.stage(fs, path, info, "s3://" + path, ".svs")
    assert scratch.used_bytes() == 0 and not list(scratch.root.glob(".*partial"))


def test_object_replaced_while_staging_is_detected(staged_uris, s3_options, tmp_path: Path) -> None:
    fs = s3fs.S3FileSystem(**s3_options)
    path = staged_uris["a"].removeprefix("s3://")
    stale = object_info(fs, path)
    fs.pipe(path, fs.cat(path) + b"\0")  # someone re-uploads between stat and download
    scratch = ScratchSpace(tmp_path, 2**30)
    with pytest.raises(StagingError):
        scratch.stage(fs, path, stale, "s3://" + path, ".svs")
