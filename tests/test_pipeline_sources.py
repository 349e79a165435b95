"""Ingestion sources: manifests and globs, with clear errors naming file and row."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest.pipeline.sources import ManifestError, load_sources


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


def test_csv_manifest_with_relative_paths_and_overrides(tmp_path: Path) -> None:
    _touch(tmp_path, "a.svs", "b.tif")
    (tmp_path / "m.csv").write_text("uri,slide_id,patient_id,mpp\na.svs,S-1,P1,0.25\nb.tif,,P1,\n")
    sources = load_sources(str(tmp_path / "m.csv"))
    assert [s.slide_id for s in sources] == ["S-1", "b"]
    assert sources[0].uri == str(tmp_path / "a.svs") and sources[0].mpp == 0.25
    assert sources[1].patient_id == "P1" and sources[1].mpp is None


def test_parquet_manifest(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"path": ["s3://bucket/x.svs"], "patient_id": ["P9"]}), tmp_path / "m.parquet"
    )
    (source,) = load_sources(str(tmp_path / "m.parquet"))
    assert (source.uri, source.slide_id, source.patient_id) == ("s3://bucket/x.svs", "x", "P9")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("uri,slide_id\na.svs,../x\n", "row 2"),
        ("uri,slide_id\na.svs,s1\nb.svs,s1\n", "row 3: slide_id 's1' repeats row 2"),
        ("name\na.svs\n", "no slide column"),
        ("uri,mpp\na.svs,-1\n", "row 2: mpp must be a positive"),
        ("uri\n", "no rows"),
    ],
)
def test_malformed_manifests(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(ManifestError, match=message) as info:
        load_sources(str(path))
    assert str(path) in str(info.value)


def test_glob_and_folder(tmp_path: Path) -> None:
    _touch(tmp_path, "a.svs", "b.svs", "notes.txt")
    assert [s.slide_id for s in load_sources(str(tmp_path / "*.svs"))] == ["a", "b"]
    assert [s.slide_id for s in load_sources(str(tmp_path))] == ["a", "b"]
    with pytest.raises(ManifestError, match="no such"):
        load_sources(str(tmp_path / "missing"))


@pytest.mark.s3
def test_s3_prefix(s3_bucket: str, s3_options: dict) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    fs.pipe(f"{s3_bucket}/cohort/one.svs", b"x")
    fs.pipe(f"{s3_bucket}/cohort/two.svs", b"x")
    got = load_sources(f"{s3_bucket}/cohort/*.svs", s3_options)
    assert [s.uri for s in got] == [f"{s3_bucket}/cohort/one.svs", f"{s3_bucket}/cohort/two.svs"]


def test_manifest_columns_ingest_does_not_store_are_named_with_where_they_go(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 30: a manifest's clinical columns were dropped without a word."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,patient_id,grade,Stage\na.svs,P1,3,II\n")
    with caplog.at_level("WARNING", logger="ingest.pipeline.sources"):
        sources = load_sources(str(manifest))
    assert sources[0].patient_id == "P1"
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "'grade', 'Stage'" in message and f"slides set {manifest}" in message
    caplog.clear()
    (tmp_path / "plain.csv").write_text("uri,slide_id,mpp\na.svs,a,0.5\n")
    with caplog.at_level("WARNING", logger="ingest.pipeline.sources"):
        load_sources(str(tmp_path / "plain.csv"))
    assert not caplog.records
