"""Cohorts: omics labels joined with the store's slides, reports, outputs and SQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests._support.omics import planted_cohort, tcga_patient
from training.cohorts import (
    CohortConfig,
    CohortError,
    LeakageError,
    build_cohort,
    build_external,
    cohort_tables,
    connect,
    join_slides,
    slides_frame,
)
from training.omics import ExpressionConfig, MappingError

ENCODER = "enc-test"


def _patients() -> pd.DataFrame:
    frame = pd.DataFrame(
        {"sig_label": ["High", "Median/Low", "High"], "sig_high": [1, 0, 1]},
        index=pd.Index(["P1", "P2", "P3"], name="patient_id"),
    )
    return frame


def test_join_reports_what_did_not_join() -> None:
    slides = pd.DataFrame(
        {
            "slide_id": ["A1", "A2", "B1", "D1", "U1"],
            "patient_id": ["P1", "P1", "P2", "P4", None],
        }
    )
    table, report = join_slides(_patients(), slides_frame(slides), name="c1")
    assert table["slide_id"].tolist() == ["A1", "A2", "B1"]
    assert table["patient_id"].tolist() == ["P1", "P1", "P2"]
    assert set(table["cohort"]) == {"c1"}
    assert table.loc[table["slide_id"] == "A2", "sig_label"].item() == "High"
    assert report.patients_with_several_slides == {"P1": 2}
    assert report.slides_without_omics == ("D1", "U1") and report.slides_without_patient == ("U1",)
    assert report.omics_without_slides == ("P3",)
    assert report.label_counts == {"sig": {"High": 1, "Median/Low": 1}}
    assert (report.n_slides, report.n_patients, report.n_store_slides) == (3, 2, 5)


def test_mapping_fills_in_and_barcodes_fill_in() -> None:
    slides = slides_frame(
        pd.DataFrame({"slide_id": ["A1", "TCGA-ZZ-0001-01Z-00-DX1"], "patient_id": [None, None]})
    )
    mapping = pd.DataFrame({"slide_id": ["A1"], "patient_id": ["P1"]})
    patients = pd.concat(
        [
            _patients(),
            pd.DataFrame({"sig_label": ["High"], "sig_high": [1]}, index=["TCGA-ZZ-0001"]),
        ]
    )
    table, _ = join_slides(patients, slides, slide_mapping=mapping)
    assert dict(zip(table["slide_id"], table["patient_id"], strict=True)) == {
        "A1": "P1",
        "TCGA-ZZ-0001-01Z-00-DX1": "TCGA-ZZ-0001",
    }


def test_mapping_that_contradicts_the_store_is_an_error() -> None:
    # Silently taking the mapping's patient could turn one patient's two slides into two
    # patients, which then straddle a split (leakage).
    slides = slides_frame(pd.DataFrame({"slide_id": ["A1", "A2"], "patient_id": ["P1", "P1"]}))
    mapping = pd.DataFrame({"slide_id": ["A1", "A2"], "patient_id": ["P1", "P2"]})
    with pytest.raises(CohortError, match="A2: the mapping says 'P2', the store 'P1'"):
        join_slides(_patients(), slides, slide_mapping=mapping)


def test_nothing_in_common_is_an_error() -> None:
    with pytest.raises(CohortError, match="no slide joins the omics"):
        join_slides(
            _patients(), slides_frame(pd.DataFrame({"slide_id": ["Z1"], "patient_id": ["P9"]}))
        )


def _store(root: Path, slides: dict[str, str | None], failed: tuple[str, ...] = ()):
    from features.store import FeatureStore, SlideInfo, SlideKey, failed_slide, tile_batch

    store = FeatureStore.open(str(root / "store"), create=True)
    rng = np.random.default_rng(0)
    pending = []
    for i, (slide, patient) in enumerate(slides.items()):
        key = SlideKey(slide, ENCODER, "cfg0001")
        info = SlideInfo(source_uri=f"s3://slides/{slide}.svs", mpp=0.25, patient_id=patient)
        if slide in failed:
            pending.append(failed_slide(key, info, RuntimeError("unreadable")))
            continue
        n = 4 + i % 3
        tiles = tile_batch(
            np.arange(n) * 256, 0, rng.normal(size=(n, 8)).astype("float32"), tile_size=256
        )
        pending.append(store.write_slide(key, info, [tiles]))
    store.commit(pending)
    return store


def test_slides_from_every_source(tmp_path: Path) -> None:
    import lance

    slides = {"A1": "P1", "A2": "P1", "B1": None, "C1": "P3"}
    store = _store(tmp_path, slides, failed=("C1",))
    expected = pd.DataFrame(
        {"slide_id": ["A1", "A2", "B1"], "patient_id": ["P1", "P1", pd.NA]}
    ).astype("string")
    frame = store.slides().to_pandas()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "slides.parquet")
    frame[["slide_id", "patient_id", "status"]].to_csv(tmp_path / "slides.csv", index=False)
    sources = [
        store,
        store.uri,
        f"{store.uri}/slides.lance",
        lance.dataset(f"{store.uri}/slides.lance"),
        frame,
        pa.Table.from_pandas(frame),
        str(tmp_path / "slides.parquet"),
        str(tmp_path / "slides.csv"),
    ]
    for source in sources:
        got = slides_frame(source)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False, obj=type(source).__name__)
    assert len(slides_frame(store, status=None)) == 4  # the failed slide is back


def test_build_from_a_store_end_to_end(tmp_path: Path) -> None:
    planted = planted_cohort(60, seed=1, normals=4)
    expression = planted.write_tsv(tmp_path / "tcga.tsv")
    # Diagnostic slides named by barcode; every third patient has two; 5 patients none.
    slides: dict[str, str | None] = {}
    for i in range(5, 60):
        slides[f"{tcga_patient(i)}-01Z-00-DX1"] = None
        if i % 3 == 0:
            slides[f"{tcga_patient(i)}-01Z-00-DX2"] = None
    slides["TCGA-YY-0001-01Z-00-DX1"] = None  # a slide without omics
    store = _store(tmp_path, slides)
    config = CohortConfig(signatures=("ayers_ifng6", "inflammatory4"), name="tcga")
    build = build_cohort(config, str(expression), store)
    cohort, report = build.cohort, build.cohort.report
    table = cohort.table
    assert report.n_patients == 55 and report.n_slides == len(slides) - 1
    assert report.slides_without_omics == ("TCGA-YY-0001-01Z-00-DX1",)
    assert report.omics_without_slides == tuple(tcga_patient(i) for i in range(5))
    assert len(report.patients_with_several_slides) == len([i for i in range(5, 60) if i % 3 == 0])
    assert (table.groupby("patient_id")["fold"].nunique() == 1).all()
    assert (table.groupby("patient_id")["split"].nunique() == 1).all()
    for column in (
        "ayers_ifng6_score",
        "ayers_ifng6_label",
        "ayers_ifng6_high",
        "inflammatory4_label",
    ):
        assert column in table.columns
    sigs = {s["signature"]: s for s in report.signatures}
    assert sigs["ayers_ifng6"]["genes_missing"] == []
    # Labels agree with the plant on the patients that have slides.
    high = table.drop_duplicates("patient_id").set_index("patient_id")["ayers_ifng6_high"]
    assert (high.astype(bool) == planted.high.reindex(high.index)).mean() >= 0.95

    out = cohort.write_parquet(str(tmp_path / "out" / "cohort.parquet"))
    written = pq.read_table(out)
    meta = written.schema.metadata
    assert meta[b"slidebank.config_hash"].decode() == cohort.config_hash == report.config_hash
    assert b"ayers_ifng6" in meta[b"slidebank.config"]
    assert written.num_rows == len(table)
    import lance

    lance_uri = cohort.write_lance(str(tmp_path / "out" / "cohort.lance"))
    dataset = lance.dataset(lance_uri)
    assert dataset.count_rows() == len(table)
    assert dataset.schema.metadata[b"slidebank.config_hash"].decode() == cohort.config_hash

    con = connect(store, tables=cohort_tables(build), encoder=ENCODER)
    rows = con.sql(
        "SELECT c.ayers_ifng6_label AS label, count(DISTINCT t.slide_id) AS slides, count(*) AS tiles "
        "FROM tiles t JOIN cohort c USING (slide_id) GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert sum(r[1] for r in rows) == report.n_slides and {r[0] for r in rows} == {
        "High",
        "Median/Low",
    }
    genes = con.sql("SELECT count(*) FROM signatures WHERE signature = 'inflammatory4'").fetchall()
    assert genes == [(4,)]
    assert con.sql("SELECT count(*) FROM slides").fetchall() == [(len(slides),)]


def test_external_cohort_with_a_mapping(tmp_path: Path) -> None:
    discovery_expr = planted_cohort(45, seed=2).write_tsv(tmp_path / "tcga.tsv")
    discovery_slides = pd.DataFrame(
        {"slide_id": [f"{tcga_patient(i)}-01Z-00-DX1" for i in range(45)]}
    )
    config = CohortConfig(signatures=("ayers_ifng6",))
    discovery = build_cohort(config, str(discovery_expr), discovery_slides)

    hospital = planted_cohort(30, seed=3, tcga=False)
    log_values = np.log2(hospital.tpm + 1.0)
    log_values.T.rename_axis("sample").to_csv(tmp_path / "hospital.csv")  # samples × genes, log2
    mapping = pd.DataFrame(
        {"sample_id": hospital.samples, "patient_id": hospital.patients,
         "slide_id": [f"HOSP-{i:04d}" for i in range(30)]}
    )  # fmt: skip
    mapping.to_csv(tmp_path / "map.csv", index=False)
    ext_config = CohortConfig(
        signatures=("ayers_ifng6",), expression=ExpressionConfig(units="log2")
    )
    external = build_external(
        ext_config, str(tmp_path / "hospital.csv"), mapping[["slide_id"]],
        discovery=discovery.cohort, mapping=str(tmp_path / "map.csv"),
    )  # fmt: skip
    table = external.cohort.table
    assert external.cohort.name == "external" and set(table["split"]) == {"external"}
    assert "fold" not in table.columns and len(table) == 30
    assert set(table["patient_id"]).isdisjoint(discovery.cohort.table["patient_id"])

    with pytest.raises(LeakageError):
        build_external(config, str(discovery_expr), discovery_slides, discovery=discovery.cohort)

    partial = mapping.iloc[:-1]
    partial.to_csv(tmp_path / "partial.csv", index=False)
    with pytest.raises(MappingError) as info:
        build_external(
            ext_config, str(tmp_path / "hospital.csv"), mapping[["slide_id"]],
            mapping=str(tmp_path / "partial.csv"),
        )  # fmt: skip
    assert info.value.file == str(tmp_path / "hospital.csv") and "S0029 (row 30)" in str(info.value)
    assert "partial.csv" in str(info.value)


def test_config_hash_tracks_config_and_gene_lists(tmp_path: Path) -> None:
    from training.omics import Signature

    expr = planted_cohort(30, seed=4).write_tsv(tmp_path / "e.tsv")
    slides = pd.DataFrame({"slide_id": [f"{tcga_patient(i)}-01Z-00-DX1" for i in range(30)]})
    base = CohortConfig(signatures=("mine",))
    a = Signature("mine", ("IFNG", "STAT1", "IDO1"), source="me")
    b = Signature("mine", ("IFNG", "STAT1", "CXCL9"), source="me")
    kwargs = {"splits": False}
    h1 = build_cohort(
        base, str(expr), slides, user_signatures={"mine": a}, **kwargs
    ).cohort.config_hash
    h2 = build_cohort(
        base, str(expr), slides, user_signatures={"mine": a}, **kwargs
    ).cohort.config_hash
    h3 = build_cohort(
        base, str(expr), slides, user_signatures={"mine": b}, **kwargs
    ).cohort.config_hash
    from dataclasses import replace

    from training.omics import LabelConfig

    other = replace(base, labels=LabelConfig(n_clusters=2))
    h4 = build_cohort(
        other, str(expr), slides, user_signatures={"mine": a}, **kwargs
    ).cohort.config_hash
    assert h1 == h2 and len({h1, h3, h4}) == 3
