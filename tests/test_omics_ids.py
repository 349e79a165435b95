"""TCGA barcodes (sample types, vials, portions, analytes, slides) and mapping tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.omics import (
    MappingError,
    OmicsTableError,
    is_tcga_barcode,
    load_mapping,
    parse_tcga_barcode,
    patients_for_samples,
    patients_for_slides,
    tcga_patient_id,
)


def test_full_aliquot_barcode() -> None:
    code = parse_tcga_barcode("TCGA-2V-A95S-01A-11R-A37K-07")
    assert code.patient_id == "TCGA-2V-A95S"
    assert (code.project, code.tss, code.participant) == ("TCGA", "2V", "A95S")
    assert code.sample_code == "01" and code.sample_type == "Primary Solid Tumor"
    assert code.sample_type_letters == "TP" and code.is_tumor and not code.is_normal
    assert (code.vial, code.portion, code.analyte) == ("A", "11", "R")
    assert code.analyte_name == "RNA"
    assert (code.plate, code.center) == ("A37K", "07")
    assert code.sample_id == "TCGA-2V-A95S-01A"
    assert code.slide is None


@pytest.mark.parametrize(
    ("barcode", "code", "name", "vial", "portion", "analyte"),
    [
        ("TCGA-DD-A4NG-11A-11R-A260-07", "11", "Solid Tissue Normal", "A", "11", "R"),
        ("TCGA-BC-A10Q-10A-01D-A12Z-10", "10", "Blood Derived Normal", "A", "01", "D"),
        ("TCGA-ZS-A9CF-02B-21R-A38C-07", "02", "Recurrent Solid Tumor", "B", "21", "R"),
        ("TCGA-ED-A459-06A-12T-A26X-13", "06", "Metastatic", "A", "12", "T"),
        ("TCGA-ZZ-0001-01C-02W", "01", "Primary Solid Tumor", "C", "02", "W"),
    ],
)
def test_sample_types_vials_portions_analytes(
    barcode: str, code: str, name: str, vial: str, portion: str, analyte: str
) -> None:
    parsed = parse_tcga_barcode(barcode)
    assert (parsed.sample_code, parsed.sample_type) == (code, name)
    assert (parsed.vial, parsed.portion, parsed.analyte) == (vial, portion, analyte)
    assert parsed.patient_id == barcode[:12]
    assert parsed.is_normal == (10 <= int(code) <= 19)


def test_partial_barcodes() -> None:
    patient = parse_tcga_barcode("TCGA-2V-A95S")
    assert patient.patient_id == "TCGA-2V-A95S" and patient.sample_code is None
    assert patient.sample_type is None and patient.is_tumor is None
    sample = parse_tcga_barcode("TCGA-2V-A95S-01")
    assert (
        sample.sample_code == "01" and sample.vial is None and sample.sample_id == "TCGA-2V-A95S-01"
    )
    vial = parse_tcga_barcode("tcga-2v-a95s-01a")  # case is normalised
    assert vial.sample_id == "TCGA-2V-A95S-01A"


def test_slide_barcodes_and_gdc_file_names() -> None:
    slide = parse_tcga_barcode("TCGA-2V-A95S-01Z-00-DX1")
    assert slide.patient_id == "TCGA-2V-A95S" and slide.slide == "DX1"
    assert slide.vial == "Z" and slide.portion == "00" and slide.analyte is None
    assert slide.slide_kind == "diagnostic slide (FFPE)"
    frozen = parse_tcga_barcode("TCGA-DD-A4NG-01A-01-TS1.0D6B5BE7-37C5-4B2C-9B2C-5D86A1C1E0E3.svs")
    assert frozen.slide == "TS1" and frozen.slide_kind == "top section (frozen)"
    assert tcga_patient_id("TCGA-DD-A4NG-01A-01-BS1") == "TCGA-DD-A4NG"


@pytest.mark.parametrize(
    "text", ["", "TCGA", "TCGA-2V", "XYZ-2V-A95S-01A", "TCGA-2V-A95S-1A", "slide_001"]
)
def test_not_barcodes(text: str) -> None:
    assert not is_tcga_barcode(text)
    with pytest.raises(OmicsTableError, match="not a TCGA barcode"):
        parse_tcga_barcode(text)


def test_unknown_sample_type_code_is_named_not_guessed() -> None:
    assert parse_tcga_barcode("TCGA-2V-A95S-99A").sample_type == "sample type 99"


def test_mapping_table_and_lookups(tmp_path: Path) -> None:
    path = tmp_path / "map.tsv"
    path.write_text(
        "Sample_ID\tPatient_ID\tSlide_ID\n"
        "H-001-T\tP001\tHOSP-001-A\n"
        "H-001-T\tP001\tHOSP-001-B\n"
        "H-002-T\tP002\tHOSP-002-A\n"
    )
    mapping = load_mapping(str(path))
    samples = patients_for_samples(["H-001-T", "H-002-T", "TCGA-2V-A95S-01A-11R-A37K-07"], mapping)
    assert samples.to_dict() == {
        "H-001-T": "P001",
        "H-002-T": "P002",
        "TCGA-2V-A95S-01A-11R-A37K-07": "TCGA-2V-A95S",
    }
    slides = patients_for_slides(["HOSP-001-B", "TCGA-2V-A95S-01Z-00-DX1", "other"], mapping)
    assert slides["HOSP-001-B"] == "P001" and slides["TCGA-2V-A95S-01Z-00-DX1"] == "TCGA-2V-A95S"
    assert pd.isna(slides["other"])
    # The store's own patient_id is used when the mapping does not know the slide.
    assert patients_for_slides(["other"], mapping, {"other": "P009"})["other"] == "P009"


def test_missing_mapping_names_the_files_and_the_sample() -> None:
    mapping = pd.DataFrame({"sample_id": ["H-001-T"], "patient_id": ["P001"]})
    with pytest.raises(MappingError) as info:
        patients_for_samples(
            ["H-001-T", "H-003-T"],
            load_mapping(mapping, name="map.tsv"),
            expression_file="hospital.csv",
            mapping_file="map.tsv",
            positions={"H-003-T": "column 3"},
        )
    message = str(info.value)
    assert info.value.file == "hospital.csv" and "H-003-T (column 3)" in message
    assert "not in mapping table map.tsv" in message


def test_mapping_errors_name_file_line_and_column(tmp_path: Path) -> None:
    blank = tmp_path / "blank.csv"
    blank.write_text("sample_id,patient_id\nS1,P1\nS2,\n")
    with pytest.raises(MappingError) as info:
        load_mapping(str(blank))
    assert (info.value.file, info.value.line, info.value.column) == (str(blank), 3, "patient_id")

    clash = tmp_path / "clash.tsv"
    clash.write_text("sample_id\tpatient_id\nS1\tP1\nS2\tP2\nS1\tP3\n")
    with pytest.raises(MappingError, match="several patients") as info:
        load_mapping(str(clash))
    assert info.value.line == 4 and "lines 2, 4" in str(info.value)

    no_patient = tmp_path / "nopatient.tsv"
    no_patient.write_text("sample_id\tslide_id\nS1\tA\n")
    with pytest.raises(MappingError, match="patient_id column"):
        load_mapping(str(no_patient))

    bad_slide = tmp_path / "badslide.tsv"
    bad_slide.write_text("slide_id\tpatient_id\n../etc/passwd\tP1\n")
    with pytest.raises(MappingError) as info:
        load_mapping(str(bad_slide))
    assert (info.value.line, info.value.column) == (2, "slide_id")
