"""A labelled synthetic cohort made the way a real one is: pixels -> ingestion -> omics -> join.

Half of the patients are "inflamed": their slides carry lymphocyte aggregates (dense
small dark round nuclei, :mod:`synthetic.slides`) over a chosen share of the tissue.
The slides go through the real ingestion pipeline (tissue detection, tiling, Macenko
normalization, the default ``handcrafted-he-v1`` encoder) into a feature store. Each
patient's RNA-seq has IFN-γ signature genes that rise with the infiltrate
(:mod:`synthetic.omics`); labels (signature score -> High / Median/Low),
regression targets (log2 expression per gene) and patient-level folds come from
:mod:`training.omics` and :mod:`training.cohorts`, exactly as for TCGA. So a model can
only get the label right by seeing the infiltrate in the pixels, and its attention can
be checked against the infiltrate's ground-truth mask.

It lives in the facade because it drives both ``ingest`` and ``training``.

>>> cohort, external = make_ingested_cohort("work", CohortSpec(n_patients=32),
...                                         external=CohortSpec(n_patients=12, prefix="EXT"))
>>> cohort.table[["slide_id", "patient_id", "ayers_ifng6_label", "fold"]]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from infra.errors import ConfigError
from infra.validate import at_least, fraction, require

if TYPE_CHECKING:
    from features.store import FeatureStore

__all__ = [
    "DEMO_LABEL",
    "CohortSlide",
    "CohortSpec",
    "DemoSlide",
    "IngestedCohort",
    "demo_plan",
    "ingest_cohort_slides",
    "label_cohort",
    "make_ingested_cohort",
    "write_cohort_slides",
    "write_demo_labels",
]

log = logging.getLogger(__name__)

SIGNATURE = "ayers_ifng6"


@dataclass(frozen=True)
class CohortSpec:
    """What to generate: patients, slides, infiltrate and omics."""

    n_patients: int = 32
    # Every k-th patient has a second slide (0: one slide each): folds must keep them together.
    second_slide_every: int = 4
    inflamed_share: float = 0.5
    fraction_range: tuple[float, float] = (0.15, 0.40)  # infiltrate share of the tissue
    # Scattered lymphocytes in every slide, cold ones too (see SyntheticSlideSpec): without
    # them a cold slide has no nuclei as dark as an infiltrate's, and per-slide Macenko
    # normalization (which scales by the 99th-percentile hematoxylin) would shift the
    # whole inflamed slide, a slide-wide shortcut that real tissue rarely offers.
    lymphocyte_background: float = 0.04
    width: int = 2048
    height: int = 2048
    mpp: float = 0.5
    style: str = "svs"
    n_blobs: int | None = 3
    jpeg_quality: int = 90
    seed: int = 0
    prefix: str = "SYN"
    # omics
    slope: float = 8.0
    noise: float = 0.35
    shift: float = 0.0
    n_background: int = 24
    # splits (fractions generous enough that small cohorts can still be stratified)
    n_folds: int = 4
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    name: str = "discovery"

    def __post_init__(self) -> None:
        at_least("CohortSpec.n_patients", self.n_patients, 4)
        fraction("CohortSpec.inflamed_share", self.inflamed_share, open_low=True, open_high=True)
        lo, hi = self.fraction_range
        require(
            0.0 < lo <= hi < 1.0,
            "CohortSpec.fraction_range",
            "(low, high) with 0 < low <= high < 1",
            self.fraction_range,
        )


@dataclass(frozen=True)
class CohortSlide:
    slide_id: str
    patient_id: str
    inflamed: bool
    truth: Any  # synthetic.slides.SyntheticSlide


@dataclass
class IngestedCohort:
    """A labelled cohort over ingested slides, with the planted ground truth per tile."""

    store_uri: str
    encoder: str
    table: pd.DataFrame  # cohort table + expr_<GENE> regression targets
    build: Any  # training.cohorts.CohortBuild
    slides: dict[str, CohortSlide]
    tile_coords: dict[str, np.ndarray] = field(default_factory=dict)  # slide -> (N, 2)
    tile_coverage: dict[str, np.ndarray] = field(default_factory=dict)  # slide -> (N,)
    tracking_targets: list[str] = field(default_factory=list)
    background_targets: list[str] = field(default_factory=list)
    label: str = f"{SIGNATURE}_label"

    def planted(self, slide_id: str, min_coverage: float = 0.0) -> np.ndarray:
        """(M, 2) coords of the slide's tiles whose area the infiltrate covers by more
        than ``min_coverage`` (0: any overlap with the ground-truth mask)."""
        coverage = self.tile_coverage[slide_id]
        return self.tile_coords[slide_id][coverage > min_coverage]

    def infiltrate(self, slide_id: str) -> float:
        return self.slides[slide_id].truth.lymphocyte_fraction


def write_cohort_slides(folder: str | Path, spec: CohortSpec) -> list[CohortSlide]:
    """Write the cohort's slides; inflamed patients get an infiltrate of a random share
    in ``fraction_range`` (the same target for each of their slides)."""
    from synthetic.slides import SyntheticSlideSpec, write_synthetic_slide

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([spec.seed, 0xC0])
    n_inflamed = int(round(spec.inflamed_share * spec.n_patients))
    inflamed = np.zeros(spec.n_patients, bool)
    inflamed[rng.permutation(spec.n_patients)[:n_inflamed]] = True
    out = []
    for p in range(spec.n_patients):
        patient = f"{spec.prefix}-{p:03d}"
        fraction = float(rng.uniform(*spec.fraction_range)) if inflamed[p] else 0.0
        n_slides = 2 if spec.second_slide_every and p % spec.second_slide_every == 1 else 1
        for k in range(n_slides):
            slide_id = f"{patient}-{'AB'[k]}"
            suffix = ".svs" if spec.style == "svs" else ".tif"
            slide_spec = SyntheticSlideSpec(
                width=spec.width,
                height=spec.height,
                mpp=spec.mpp,
                style=spec.style,  # type: ignore[arg-type]
                seed=spec.seed * 10_000 + p * 10 + k,
                n_blobs=spec.n_blobs,
                downsamples=(1, 4),
                jpeg_quality=spec.jpeg_quality,
                lymphocyte_fraction=fraction,
                lymphocyte_background=spec.lymphocyte_background,
            )
            truth = write_synthetic_slide(folder / f"{slide_id}{suffix}", slide_spec)
            out.append(CohortSlide(slide_id, patient, bool(inflamed[p]), truth))
    return out


def ingest_cohort_slides(
    slides: Sequence[CohortSlide], store: FeatureStore, *, config: Any = None, options: Any = None
) -> Any:
    """Ingest through :func:`ingest.pipeline.runner.run_ingest` (default encoder); any
    failed slide is an error here, since the cohort's truth would no longer hold."""
    from ingest.pipeline.config import IngestConfig, RunOptions
    from ingest.pipeline.runner import run_ingest
    from ingest.pipeline.sources import SlideSource

    sources = [SlideSource(str(s.truth.path), s.slide_id, patient_id=s.patient_id) for s in slides]
    result = run_ingest(
        sources,
        store,
        config or IngestConfig(),
        options or RunOptions(progress=False),
        dashboard=False,
    )
    if result.failed:
        first = result.failed[0]
        raise ConfigError(
            f"{len(result.failed)} cohort slides failed to ingest, e.g. "
            f"{first.slide_id}: {first.error_type} {first.error_message}"
        )
    return result


#: The label ``slidebank demo`` writes to ``labels.csv`` (the README's examples use it).
DEMO_LABEL = "immune"


@dataclass(frozen=True)
class DemoSlide:
    """One slide of ``slidebank demo``: who it belongs to and what was planted in it."""

    slide_id: str
    patient_id: str
    immune: str  # "High": lymphocyte aggregates over ``infiltrate`` of the tissue; else "Low"
    infiltrate: float


def demo_plan(n_slides: int) -> list[DemoSlide]:
    """The demo's slides: two per patient (``P000``...), the first half of the patients
    immune-High with an infiltrate of 20-35% of the tissue (the same for both of a
    patient's slides, as bulk RNA would see it), so a probe has real signal to find."""
    n_patients = -(-n_slides // 2)
    rng = np.random.default_rng([7, 0xDE])
    fractions = rng.uniform(0.20, 0.35, n_patients)
    out = []
    for i in range(n_slides):
        p = i // 2
        high = p < n_patients // 2 or n_patients == 1
        out.append(
            DemoSlide(
                f"synthetic-{i:02d}",
                f"P{p:03d}",
                "High" if high else "Low",
                round(float(fractions[p]), 3) if high else 0.0,
            )
        )
    return out


def write_demo_labels(path: str | Path, slides: Sequence[DemoSlide]) -> Path:
    """``labels.csv`` as a new task brings it: slide_id, patient_id, the class label
    ``immune`` (High / Low) and the continuous ``infiltrate`` share."""
    from infra.files import atomic_write

    frame = pd.DataFrame(
        [
            {
                "slide_id": s.slide_id,
                "patient_id": s.patient_id,
                DEMO_LABEL: s.immune,
                "infiltrate": s.infiltrate,
            }
            for s in slides
        ]
    )
    with atomic_write(path, "w") as handle:
        frame.to_csv(handle, index=False)
    return Path(path)


def _patient_fractions(slides: Sequence[CohortSlide]) -> dict[str, float]:
    """Each patient's infiltrate share, averaged over their slides (as bulk RNA would)."""
    per: dict[str, list[float]] = {}
    for s in slides:
        per.setdefault(s.patient_id, []).append(s.truth.lymphocyte_fraction)
    return {p: float(np.mean(v)) for p, v in per.items()}


def label_cohort(
    store: FeatureStore,
    slides: Sequence[CohortSlide],
    spec: CohortSpec,
    omics_folder: str | Path,
    *,
    encoder: str = "handcrafted-he-v1",
    discovery: IngestedCohort | None = None,
) -> IngestedCohort:
    """Expression -> signature score -> quantile label (top ``1 - inflamed_share`` of
    the score is High) -> join with the store's slides -> patient-level folds, plus
    ``expr_<GENE>`` regression targets. With ``discovery``, an external cohort
    (labelled within itself, no folds, checked to share no patient with it)."""
    from synthetic.omics import expression_tracking
    from training.cohorts import CohortConfig, SplitConfig, build_cohort, build_external
    from training.omics import ExpressionConfig, LabelConfig, regression_targets

    expression = expression_tracking(
        _patient_fractions(slides),
        signature=SIGNATURE,
        slope=spec.slope,
        noise=spec.noise,
        n_background=spec.n_background,
        shift=spec.shift,
        seed=spec.seed,
    )
    expr_path, mapping_path = expression.write(omics_folder, f"{spec.prefix.lower()}_expression")
    config = CohortConfig(
        signatures=(SIGNATURE,),
        expression=ExpressionConfig(units="tpm", orientation="genes_x_samples"),
        labels=LabelConfig(method="quantile", high_quantile=1.0 - spec.inflamed_share),
        splits=SplitConfig(
            n_splits=spec.n_folds,
            seed=spec.seed,
            val_fraction=spec.val_fraction,
            test_fraction=spec.test_fraction,
        ),
        name=spec.name,
    )
    if discovery is None:
        build = build_cohort(config, str(expr_path), store, mapping=str(mapping_path))
    else:
        build = build_external(
            config,
            str(expr_path),
            store,
            mapping=str(mapping_path),
            discovery=discovery.build.cohort,
            name=spec.name,
        )
    genes = [*expression.tracking_genes, *expression.background_genes]
    targets = regression_targets(build.patients, genes=genes)
    table = build.cohort.table.merge(targets, left_on="patient_id", right_index=True, how="left")
    mine = {s.slide_id: s for s in slides}
    cohort = IngestedCohort(
        store_uri=store.uri,
        encoder=encoder,
        table=table,
        build=build,
        slides=mine,
        tracking_targets=[f"expr_{g}" for g in expression.tracking_genes],
        background_targets=[f"expr_{g}" for g in expression.background_genes],
    )
    _tile_truth(cohort, store, encoder)
    return cohort


def _tile_truth(cohort: IngestedCohort, store: FeatureStore, encoder: str) -> None:
    """Per stored tile: the share of its footprint that the infiltrate covers."""
    from ingest.pipeline.config import IngestConfig

    tiling = IngestConfig().tiling
    table = store.latest().tiles(
        encoder=encoder, slide_ids=list(cohort.slides), columns=["slide_id", "x", "y"]
    )
    frame = table.to_pandas()
    for slide_id, part in frame.groupby("slide_id"):
        truth = cohort.slides[str(slide_id)].truth
        # The tile's footprint in level-0 pixels: tile_size at the target mpp.
        size = int(round(tiling.tile_size * tiling.target_mpp / truth.spec.mpp))
        coords = part[["x", "y"]].to_numpy(dtype=np.int64)
        cohort.tile_coords[str(slide_id)] = coords
        cohort.tile_coverage[str(slide_id)] = np.array(
            [truth.lymphocyte_coverage(int(x), int(y), size) for x, y in coords]
        )


def make_ingested_cohort(
    root: str | Path,
    spec: CohortSpec | None = None,
    *,
    external: CohortSpec | None = None,
    store_uri: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    options: Any = None,
) -> tuple[IngestedCohort, IngestedCohort | None]:
    """Write, ingest (one pipeline run for both cohorts) and label; returns
    (discovery, external or None). The store defaults to ``<root>/store``."""
    from features.store import FeatureStore

    root = Path(root)
    spec = spec or CohortSpec()
    slides = write_cohort_slides(root / "slides" / spec.prefix, spec)
    ext_spec = None
    if external is not None:
        if external.prefix == spec.prefix:
            raise ConfigError("the external cohort needs its own prefix (patient ids must differ)")
        ext_spec = external if external.name != spec.name else replace(external, name="external")
    ext_slides = (
        write_cohort_slides(root / "slides" / ext_spec.prefix, ext_spec) if ext_spec else []
    )
    store = FeatureStore.open(store_uri or str(root / "store"), storage_options, create=True)
    ingest_cohort_slides([*slides, *ext_slides], store, options=options)
    store = store.latest()
    cohort = label_cohort(store, slides, spec, root / "omics")
    ext = None
    if ext_spec is not None:
        ext = label_cohort(store, ext_slides, ext_spec, root / "omics", discovery=cohort)
    return cohort, ext
