"""The signature library (the published gene lists and their sources) and user files."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.omics import (
    LIBRARY,
    OmicsTableError,
    Signature,
    SignatureError,
    get_signature,
    load_signatures,
    resolve_signatures,
)


def test_library_gene_lists_are_the_published_ones() -> None:
    expected = {
        "ayers_ifng6": {"IFNG", "STAT1", "IDO1", "CXCL10", "CXCL9", "HLA-DRA"},
        "ayers_expanded_immune18": {
            "CD3D", "IDO1", "CIITA", "CD3E", "CCL5", "GZMK", "CD2", "HLA-DRA", "CXCL13",
            "IL2RG", "NKG7", "HLA-E", "CXCR6", "LAG3", "TAGAP", "CXCL10", "STAT1", "GZMB",
        },
        "ribas_ifng10": {
            "IFNG", "STAT1", "CCR5", "CXCL9", "CXCL10", "CXCL11", "IDO1", "PRF1", "GZMA", "HLA-DRA",
        },
        "gajewski_inflamed13": {
            "CCL2", "CCL3", "CCL4", "CD8A", "CXCL9", "CXCL10", "ICOS", "GZMK", "IRF1",
            "HLA-DMA", "HLA-DMB", "HLA-DOA", "HLA-DOB",
        },
        "tcell_exhaustion6": {"CD274", "CD276", "CD8A", "LAG3", "PDCD1LG2", "TIGIT"},
        "inflammatory4": {"CD274", "CD8A", "LAG3", "STAT1"},
    }  # fmt: skip
    assert set(LIBRARY) == set(expected)
    for name, genes in expected.items():
        signature = LIBRARY[name]
        assert set(signature.genes) == genes and len(signature.genes) == len(genes)


def test_every_signature_records_its_source_and_verification() -> None:
    for signature in LIBRARY.values():
        assert signature.source and signature.verified
    assert LIBRARY["ayers_ifng6"].doi == "10.1172/JCI91190"
    assert "2930-2940" in LIBRARY["ayers_expanded_immune18"].source
    # Lists that could not be checked against a publication say so.
    for name in ("gajewski_inflamed13", "tcell_exhaustion6", "inflammatory4"):
        assert LIBRARY[name].verified.startswith("NOT verified")


def test_lookup_and_resolution() -> None:
    assert get_signature("ribas_ifng10") is LIBRARY["ribas_ifng10"]
    with pytest.raises(SignatureError, match="unknown signature 'nope'"):
        get_signature("nope")
    with pytest.raises(SignatureError, match="requested twice"):
        resolve_signatures(["ayers_ifng6", "ayers_ifng6"])
    with pytest.raises(SignatureError, match="twice"):
        Signature("dup", ("A", "B", "A"), source="x")


def test_yaml_gmt_and_tsv_user_files(tmp_path: Path) -> None:
    yaml_file = tmp_path / "sigs.yaml"
    yaml_file.write_text(
        "cytolytic:\n  genes: [GZMA, PRF1]\n  source: Rooney et al. 2015\n  doi: 10.1016/j.cell.2014.12.033\n"
        "mine: [CD8A, CD8B]\n"
    )
    loaded = load_signatures(str(yaml_file))
    assert (
        loaded["cytolytic"].genes == ("GZMA", "PRF1")
        and loaded["cytolytic"].source == "Rooney et al. 2015"
    )
    assert loaded["mine"].verified == "user supplied"

    gmt = tmp_path / "sigs.gmt"
    gmt.write_text("# comment\nT_CELLS\tmy T cells\tCD3D\tCD3E\tCD2\n\nB_CELLS\tna\tMS4A1\tCD19\n")
    loaded = load_signatures(str(gmt))
    assert list(loaded) == ["T_CELLS", "B_CELLS"] and loaded["T_CELLS"].description == "my T cells"

    tsv = tmp_path / "sigs.tsv"
    tsv.write_text(
        "signature\tgene\tsource\nmy_ifng\tIFNG\tlab notebook 7\nmy_ifng\tSTAT1\t\nother\tCD8A\t\n"
    )
    loaded = load_signatures(str(tsv))
    assert (
        loaded["my_ifng"].genes == ("IFNG", "STAT1")
        and loaded["my_ifng"].source == "lab notebook 7"
    )
    # User signatures resolve by name beside the library.
    assert [s.name for s in resolve_signatures(["my_ifng", "ayers_ifng6"], loaded)] == [
        "my_ifng",
        "ayers_ifng6",
    ]


def test_user_file_errors_name_file_and_line(tmp_path: Path) -> None:
    gmt = tmp_path / "bad.gmt"
    gmt.write_text("OK\tdesc\tA\tB\nBROKEN\tonly-description\n")
    with pytest.raises(OmicsTableError) as info:
        load_signatures(str(gmt))
    assert (info.value.file, info.value.line) == (str(gmt), 2)

    dup = tmp_path / "dup.gmt"
    dup.write_text("S\td\tA\tB\tA\n")
    with pytest.raises(OmicsTableError, match="twice") as info:
        load_signatures(str(dup))
    assert info.value.line == 1 and info.value.row == "S"

    tsv = tmp_path / "bad.tsv"
    tsv.write_text("signature\tgene\nS\tA\nS\t\n")
    with pytest.raises(OmicsTableError) as info:
        load_signatures(str(tsv))
    assert (info.value.line, info.value.column) == (3, "gene")

    yaml_file = tmp_path / "bad.yaml"
    yaml_file.write_text("S: [A, B\n")
    with pytest.raises(OmicsTableError, match="invalid YAML") as info:
        load_signatures(str(yaml_file))
    assert info.value.file == str(yaml_file)
