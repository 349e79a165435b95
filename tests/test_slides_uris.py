"""Open by URI: plain paths, file://, and any fsspec protocol (memory:// stands in for gs://)."""

from __future__ import annotations

import fsspec
import numpy as np
import pytest

from ingest.slides import ScratchSpace, open_slide


def test_file_uri_equals_plain_path(synthetic_svs) -> None:
    path = str(synthetic_svs.path)
    with open_slide(path) as a, open_slide(f"file://{path}") as b:
        assert a.metadata.access == b.metadata.access == "local"
        assert np.array_equal(
            a.read_region((5, 5), 0, (64, 64)), b.read_region((5, 5), 0, (64, 64))
        )


@pytest.mark.parametrize("strategy", ["stream", "stage"])
def test_any_fsspec_protocol(synthetic_svs, tmp_path, strategy: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/cohort/slide.svs", synthetic_svs.path.read_bytes())
    try:
        with (
            open_slide(
                "memory://cohort/slide.svs",
                strategy=strategy,  # type: ignore[arg-type]
                scratch=ScratchSpace(tmp_path, 2**30),
            ) as slide,
            open_slide(str(synthetic_svs.path)) as local,
        ):
            assert slide.metadata.access == strategy
            assert slide.metadata.mpp == local.metadata.mpp
            assert np.array_equal(
                slide.read_region((40, 30), 0, (96, 96)), local.read_region((40, 30), 0, (96, 96))
            )
    finally:
        fs.rm("/cohort", recursive=True)


def test_stream_with_a_local_only_reader_is_refused(synthetic_svs) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/x/slide.svs", synthetic_svs.path.read_bytes())
    try:
        with pytest.raises(ValueError, match="cannot stream"):
            open_slide("memory://x/slide.svs", strategy="stream", reader="openslide")
    finally:
        fs.rm("/x", recursive=True)
