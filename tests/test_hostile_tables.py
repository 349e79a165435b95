"""Issue 24: every user table, config and weight file is bounded work. Small hostile files
(a gzip bomb, a million-column header, a YAML billion laughs, a deflated torch archive)
are refused with a typed error naming the file, after a bounded amount of reading."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from infra.errors import ConfigError, TableReadError, WeightsError


# ---- tables: decompression bombs, wide headers ----------------------------------------------
def _gzip_bomb(path: Path, mebibytes: int = 128) -> Path:
    """A .csv.gz of ~130 KB holding ``mebibytes`` MiB of text: gzip members concatenate, so
    one compressed 1 MiB line repeated is cheap to write and expensive to read."""
    member = gzip.compress(b"a" * ((1 << 20) - 1) + b"\n", 9)
    with path.open("wb") as handle:
        handle.write(gzip.compress(b"name\n"))
        for _ in range(mebibytes):
            handle.write(member)
    return path


@pytest.mark.parametrize("reader", ["read_table", "read_arrow_table"])
def test_gzip_bomb_table_is_refused_naming_the_file(tmp_path: Path, reader: str) -> None:
    from infra import tables

    bomb = _gzip_bomb(tmp_path / "labels.csv.gz")
    assert bomb.stat().st_size < 200_000
    with pytest.raises(TableReadError, match=r"labels\.csv\.gz: decompresses past 64\.0 MiB"):
        getattr(tables, reader)(str(bomb))


def test_gzip_bomb_expression_matrix_is_refused(tmp_path: Path) -> None:
    from training.omics.errors import OmicsTableError
    from training.omics.io import load_expression

    bomb = _gzip_bomb(tmp_path / "expr.tsv.gz")
    with pytest.raises(OmicsTableError, match=r"expr\.tsv\.gz.*decompression bomb"):
        load_expression(str(bomb))


def test_ratio_cap_follows_the_limits_given(tmp_path: Path) -> None:
    from infra.tables import TableLimits, read_table

    bomb = _gzip_bomb(tmp_path / "small.tsv.gz", mebibytes=4)
    limits = TableLimits(ratio_floor=1 << 20, max_ratio=10)
    with pytest.raises(TableReadError, match=r"small\.tsv\.gz: decompresses past"):
        read_table(str(bomb), limits=limits)
    assert len(read_table(str(bomb))) == 4  # within the default caps it reads


def test_million_column_csv_names_the_column_count(tmp_path: Path) -> None:
    from infra.tables import read_arrow_table

    wide = tmp_path / "wide.csv"
    columns = 1_000_000
    wide.write_text(",".join(f"c{i}" for i in range(columns)) + "\n" + "1," * (columns - 1) + "1\n")
    # Before: "Empty CSV file or block: cannot infer number of columns".
    with pytest.raises(
        TableReadError,
        match=r"wide\.csv: header has 1,000,000 columns, more "
        r"than the 200,000",
    ):
        read_arrow_table(str(wide))


def test_parquet_footer_declaring_a_huge_table_is_refused_before_reading(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from infra.tables import read_table

    path = tmp_path / "cohort.parquet"
    # 9M identical values run-length encode to a few KB and decode to 9M cells.
    pq.write_table(pa.table({"fold": np.zeros(9_000_000, np.int8)}), path)
    assert path.stat().st_size < 100_000
    with pytest.raises(TableReadError, match=r"cohort\.parquet: declares 9,000,000 rows"):
        read_table(str(path))


def test_slides_table_goes_through_the_table_reader(tmp_path: Path) -> None:
    from training.cohorts.slides_source import slides_frame

    plain = tmp_path / "slides.csv.gz"
    plain.write_bytes(gzip.compress(b"slide_id,patient_id\n007,P1\n"))
    assert slides_frame(str(plain))["slide_id"].tolist() == ["007"]  # was "expected .csv/.tsv"
    with pytest.raises(TableReadError, match=r"slides\.csv\.gz: decompresses past"):
        slides_frame(str(_gzip_bomb(_mkdir_parent(tmp_path / "bomb" / "slides.csv.gz"))))


def _mkdir_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# ---- YAML: aliases ------------------------------------------------------------------------
def _laughs(levels: int = 6, fan: int = 10) -> str:
    """A few hundred bytes that stand for fan**levels strings once aliases are expanded."""
    lines = ['l0: &l0 "lol"']
    lines += [
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]" for i in range(1, levels + 1)
    ]
    return "\n".join(lines) + "\n"


def test_alias_bomb_config_is_refused_with_file_and_line(tmp_path: Path) -> None:
    from training.mil.run_config import load_run_config

    config = tmp_path / "train.yaml"
    config.write_text("store: s\ncohort: c.tsv\nlabels: [y]\nout: runs\n" + _laughs())
    assert len(config.read_bytes()) < 600
    with pytest.raises(
        ConfigError, match=r"train\.yaml, line \d+: aliases expand past 100,000 nodes"
    ):
        load_run_config(config)


def test_recursive_alias_in_config_is_a_config_error(tmp_path: Path) -> None:
    from training.mil.run_config import load_run_config

    config = tmp_path / "loop.yaml"
    config.write_text("store: s\ncohort: c.tsv\nout: runs\nlabels: &r [y, *r]\n")
    # Before: a bare ValueError from json.dumps ("Circular reference detected").
    with pytest.raises(ConfigError, match=r"loop\.yaml, line 4: recursive alias"):
        load_run_config(config)


def test_config_with_a_small_alias_still_loads(tmp_path: Path) -> None:
    from training.mil.run_config import load_run_config

    config = tmp_path / "ok.yaml"
    config.write_text(
        "store: s\ncohort: c.tsv\nout: runs\nlabels: &l [y]\n"
        "model: &m {model: abmil}\ntrain: {epochs: 2}\n"
    )
    assert load_run_config(config).model == {"model": "abmil"}


def test_alias_bomb_signature_file_is_refused_with_line(tmp_path: Path) -> None:
    from training.omics.errors import OmicsTableError
    from training.omics.signatures import load_signatures

    sigs = tmp_path / "sigs.yaml"
    sigs.write_text(_laughs() + "IFNG: [*l6, *l6]\n")
    with pytest.raises(
        OmicsTableError,
        match=r"sigs\.yaml \(line \d+\): invalid YAML: aliases "
        r"expand past",
    ) as info:
        load_signatures(str(sigs))
    assert info.value.line is not None


# ---- weights: zip bombs -------------------------------------------------------------------
def _torch_archive(tensor_bytes: int, compress: bool) -> bytes:
    """torch.save's zip of a float tensor of ``tensor_bytes``, the tensor's record deflated
    when ``compress`` (torch itself only ever stores it)."""
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(tensor_bytes // 4)}, buffer)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(out, "w") as dst:
        for entry in src.infolist():
            deflate = compress and "/data/" in entry.filename
            dst.writestr(
                entry.filename,
                src.read(entry),
                compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED,
            )
    return out.getvalue()


def test_deflated_torch_archive_is_refused_before_loading(tmp_path: Path) -> None:
    from features.encoders.weights import verify_weights_file

    bomb = tmp_path / "encoder.pt"
    bomb.write_bytes(_torch_archive(16 << 20, compress=True))
    assert bomb.stat().st_size < 100_000  # 16 MiB of tensor in under 100 KB
    with pytest.raises(
        WeightsError,
        match=r"encoder\.pt: refused to load: archive entry "
        r"'[^']*/data/0' is compressed",
    ):
        verify_weights_file(bomb)


def test_stored_torch_archive_still_loads(tmp_path: Path) -> None:
    from features.encoders.weights import load_state_dict

    path = tmp_path / "encoder.pt"
    path.write_bytes(_torch_archive(64, compress=False))
    assert load_state_dict(path)["w"].shape == (16,)


def test_legacy_torch_checkpoint_is_refused(tmp_path: Path) -> None:
    import torch

    from features.encoders.weights import verify_weights_file

    path = tmp_path / "old.pth"
    torch.save({"w": torch.zeros(4)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match=r"old\.pth: refused to load: not a zip archive"):
        verify_weights_file(path)
