"""Expression matrices: formats, orientation, gene ids, units, duplicates, and the
errors a malformed table gives (naming the file and the row or column)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.errors import SlidebankError
from training.omics import ExpressionConfig, OmicsTableError, load_expression, normalize_gene_id
from training.omics.io import detect_orientation, load_gene_map

GENES = ["IFNG", "STAT1", "IDO1", "CXCL10", "CXCL9", "HLA-DRA", "ACTB", "GAPDH"]
SAMPLES = [
    "TCGA-ZZ-0001-01A-11R-A37K-07",
    "TCGA-ZZ-0002-01A-11R-A37K-07",
    "TCGA-ZZ-0003-01A-11R-A37K-07",
]


def _tpm() -> pd.DataFrame:
    values = np.arange(len(GENES) * len(SAMPLES), dtype=float).reshape(len(GENES), -1) * 3.0
    return pd.DataFrame(values, index=pd.Index(GENES, name="gene"), columns=SAMPLES)


def test_genes_by_samples_tsv_is_detected_and_log_normalised(tmp_path: Path) -> None:
    path = tmp_path / "expr.tsv"
    _tpm().to_csv(path, sep="\t")
    matrix = load_expression(str(path))
    assert matrix.orientation == "genes_x_samples" and matrix.gene_ids == "symbol"
    assert matrix.samples == SAMPLES and matrix.genes == GENES
    np.testing.assert_allclose(matrix.data.to_numpy(), np.log2(_tpm().T.to_numpy() + 1))


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet", "parquet-index"])
def test_samples_by_genes_in_every_format(tmp_path: Path, fmt: str) -> None:
    frame = _tpm().T
    frame.index.name = "sample"
    path = tmp_path / f"expr.{fmt.split('-')[0]}"
    if fmt == "csv":
        frame.to_csv(path)
    elif fmt == "csv.gz":
        with gzip.open(path, "wt") as handle:
            frame.to_csv(handle)
    elif fmt == "parquet":
        frame.reset_index().to_parquet(path, index=False)
    else:
        frame.to_parquet(path)  # sample ids stored as a pandas index
    matrix = load_expression(str(path))
    assert matrix.orientation == "samples_x_genes"
    assert matrix.samples == SAMPLES and matrix.genes == GENES
    np.testing.assert_allclose(matrix.data.to_numpy(), np.log2(frame.to_numpy() + 1))


def test_declared_orientation_wins(tmp_path: Path) -> None:
    frame = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=["a", "b"], columns=["x", "y"])
    path = tmp_path / "tiny.tsv"
    frame.to_csv(path, sep="\t")
    with pytest.raises(OmicsTableError, match="cannot tell whether genes are rows or columns"):
        load_expression(str(path))
    matrix = load_expression(str(path), ExpressionConfig(orientation="samples_x_genes"))
    assert matrix.samples == ["a", "b"] and matrix.genes == ["x", "y"]


def test_orientation_from_many_more_genes() -> None:
    genes = [f"G{i}" for i in range(100)]
    assert detect_orientation(genes, ["s1", "s2", "s3"])[0] == "genes_x_samples"
    assert detect_orientation(["s1", "s2"], genes)[0] == "samples_x_genes"


def test_gene_id_normalisation() -> None:
    assert normalize_gene_id("ENSG00000111640.14") == "ENSG00000111640"
    assert normalize_gene_id("ENSG00000002586.20_PAR_Y") == "ENSG00000002586_PAR_Y"
    assert normalize_gene_id("CD8A|925") == "CD8A"
    assert normalize_gene_id("?|100130426") is None
    assert normalize_gene_id("__no_feature") is None and normalize_gene_id("N_unmapped") is None
    assert normalize_gene_id(" HLA-DRA ") == "HLA-DRA"


def test_gdc_style_table_uses_the_symbol_column(tmp_path: Path) -> None:
    path = tmp_path / "star.tsv"
    path.write_text(
        "gene_id\tgene_name\tgene_type\tS1\tS2\n"
        "N_unmapped\t\t\t10\t12\n"
        "ENSG00000111537.5\tIFNG\tprotein_coding\t3\t7\n"
        "ENSG00000115415.20\tSTAT1\tprotein_coding\t15\t1\n"
        "ENSG00000002586.20_PAR_Y\tCD99\tprotein_coding\t0\t0\n"
        "ENSG00000002586.20\tCD99\tprotein_coding\t8\t9\n"
    )
    matrix = load_expression(str(path), ExpressionConfig(orientation="genes_x_samples"))
    assert matrix.gene_ids == "symbol"
    assert matrix.genes == ["IFNG", "STAT1", "CD99"]
    assert matrix.duplicate_genes == {"CD99": 2} and "N_unmapped" in matrix.dropped_rows
    np.testing.assert_allclose(matrix.data["CD99"], np.log2(np.array([8.0, 9.0]) + 1))  # max_mean


def test_ensembl_ids_kept_or_mapped(tmp_path: Path) -> None:
    path = tmp_path / "ens.tsv"
    path.write_text("gene\tS1\tS2\nENSG00000111537.5\t1\t2\nENSG00000115415.20\t3\t4\n")
    config = ExpressionConfig(orientation="genes_x_samples")
    kept = load_expression(str(path), config)
    assert kept.gene_ids == "ensembl" and kept.genes == ["ENSG00000111537", "ENSG00000115415"]
    mapping = tmp_path / "map.tsv"
    mapping.write_text("ensembl\tsymbol\nENSG00000111537.5\tIFNG\nENSG00000115415\tSTAT1\n")
    mapped = load_expression(str(path), config, gene_map=load_gene_map(str(mapping)))
    assert mapped.gene_ids == "symbol" and mapped.genes == ["IFNG", "STAT1"]
    with pytest.raises(OmicsTableError, match="pass gene_map") as info:
        load_expression(
            str(path), ExpressionConfig(orientation="genes_x_samples", gene_ids="symbol")
        )
    assert info.value.file == str(path)


def test_counts_become_log_cpm(tmp_path: Path) -> None:
    path = tmp_path / "counts.tsv"
    path.write_text("gene\tS1\tS2\nIFNG\t10\t30\nSTAT1\t90\t70\n")
    matrix = load_expression(
        str(path), ExpressionConfig(units="counts", orientation="genes_x_samples")
    )
    expected = np.log2(np.array([[1e5, 9e5], [3e5, 7e5]]) + 1)
    np.testing.assert_allclose(matrix.data.to_numpy(), expected)


def test_log2_units_are_unchanged_and_may_be_negative(tmp_path: Path) -> None:
    path = tmp_path / "nanostring.csv"
    path.write_text("sample,IFNG,STAT1\nH1,-1.5,3.25\nH2,0.5,4.0\n")
    matrix = load_expression(
        str(path), ExpressionConfig(units="log2", orientation="samples_x_genes")
    )
    np.testing.assert_allclose(matrix.data.to_numpy(), [[-1.5, 3.25], [0.5, 4.0]])


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("max_mean", [5.0, 6.0]), ("mean", [3.0, 4.0]), ("sum", [6.0, 8.0]), ("first", [1.0, 2.0])],
)
def test_duplicate_gene_policies(tmp_path: Path, policy: str, expected: list[float]) -> None:
    path = tmp_path / "dups.tsv"
    path.write_text("gene\tS1\tS2\nIFNG\t1\t2\nSTAT1\t7\t7\nIFNG\t5\t6\n")
    config = ExpressionConfig(units="log2", orientation="genes_x_samples", duplicate_genes=policy)  # type: ignore[arg-type]
    matrix = load_expression(str(path), config)
    assert matrix.genes == ["IFNG", "STAT1"]
    np.testing.assert_allclose(matrix.data["IFNG"], expected)


# --------------------------------------------------------------------------- malformed tables


def _error(path: Path, config: ExpressionConfig | None = None) -> OmicsTableError:
    with pytest.raises(OmicsTableError) as info:
        load_expression(str(path), config or ExpressionConfig(orientation="genes_x_samples"))
    error = info.value
    assert isinstance(error, SlidebankError) and isinstance(error, ValueError)
    assert str(path) in str(error) and error.file == str(path)
    return error


def test_duplicate_sample_in_header_names_file_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "dup_samples.tsv"
    path.write_text("gene\tS1\tS2\tS1\nIFNG\t1\t2\t3\n")
    error = _error(path)
    assert error.column == "S1" and "columns 2 and 4" in str(error)


def test_duplicate_sample_in_rows_names_rows(tmp_path: Path) -> None:
    path = tmp_path / "dup_rows.csv"
    path.write_text("sample,IFNG,STAT1\nS1,1,2\nS2,3,4\nS1,5,6\n")
    error = _error(path, ExpressionConfig(orientation="samples_x_genes"))
    assert error.row == "S1" and error.line == 4 and "rows 1 and 3" in str(error)


def test_duplicate_sample_in_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dup.parquet"
    table = pa.table(
        [pa.array(["IFNG"]), pa.array([1.0]), pa.array([2.0])], names=["gene", "S1", "S1"]
    )
    pq.write_table(table, path)
    assert _error(path).column == "S1"


def test_non_numeric_value_names_row_column_and_line(tmp_path: Path) -> None:
    path = tmp_path / "text.tsv"
    path.write_text("gene\tS1\tS2\nIFNG\t1\t2\nSTAT1\t3\tn/a?\nIDO1\t5\t6\n")
    error = _error(path)
    assert (error.row, error.column, error.line) == ("STAT1", "S2", 3)
    assert "non-numeric value 'n/a?'" in str(error)


def test_missing_value_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hole.csv"
    path.write_text("sample,IFNG,STAT1\nS1,1,\nS2,3,4\n")
    error = _error(path, ExpressionConfig(orientation="samples_x_genes"))
    assert (error.row, error.column, error.line) == ("S1", "STAT1", 2)
    assert "missing value" in str(error)


def test_negative_value_on_a_linear_scale(tmp_path: Path) -> None:
    path = tmp_path / "neg.tsv"
    path.write_text("gene\tS1\tS2\nIFNG\t1\t-2\n")
    error = _error(path)
    assert (error.row, error.column) == ("IFNG", "S2") and "units='log2'" in str(error)


def test_empty_library_is_named(tmp_path: Path) -> None:
    path = tmp_path / "zero.tsv"
    path.write_text("gene\tS1\tS2\nIFNG\t1\t0\nSTAT1\t3\t0\n")
    error = _error(path, ExpressionConfig(units="counts", orientation="genes_x_samples"))
    assert error.column == "S2" and "library size 0" in str(error)


def test_ragged_and_unlabelled_rows(tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("gene\tS1\tS2\tS3\tS4\nIFNG\t1\t2\n")
    assert _error(ragged).line == 1
    unlabelled = tmp_path / "unlabelled.tsv"
    unlabelled.write_text("gene\tS1\nIFNG\t1\n\t2\n")
    assert _error(unlabelled).line == 3


def test_duplicate_genes_may_be_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup_genes.tsv"
    path.write_text("gene\tS1\nIFNG\t1\nIFNG\t2\n")
    config = ExpressionConfig(orientation="genes_x_samples", duplicate_genes="error")
    assert _error(path, config).row == "IFNG"


def test_long_form_for_sql(tmp_path: Path) -> None:
    path = tmp_path / "expr.tsv"
    _tpm().to_csv(path, sep="\t")
    long = load_expression(str(path)).to_long()
    assert long.num_rows == len(GENES) * len(SAMPLES)
    assert long.column_names == ["sample_id", "gene", "log2_expression"]
