"""Tissue detection and quality control: masks from thumbnails, on GPU or CPU.

``detect_tissue`` / ``slide_tissue_mask`` make a :class:`TissueMask` (tissue, ink,
artifacts, glass) from a thumbnail; ``saturation_otsu_mask`` is the classic baseline it
is measured against; ``mask_to_geojson`` and ``render_overlay`` export it; ``tile_qc``
scores tiles read by the pipeline.
"""

from ingest.tissue.baseline import saturation_otsu_mask
from ingest.tissue.config import INKS, Ink, TissueConfig
from ingest.tissue.contours import mask_to_geojson, write_geojson
from ingest.tissue.evaluate import iou, resample_nearest
from ingest.tissue.mask import TissueMask, detect_tissue, slide_tissue_mask
from ingest.tissue.overlay import render_overlay, write_png
from ingest.tissue.qc import (
    QC_BACKGROUND,
    QC_BLUR,
    QC_PEN,
    TileQC,
    TileQCConfig,
    blur_scores,
    describe_flags,
    qc_flags,
    tile_qc,
)

__all__ = [
    "INKS",
    "QC_BACKGROUND",
    "QC_BLUR",
    "QC_PEN",
    "Ink",
    "TileQC",
    "TileQCConfig",
    "TissueConfig",
    "TissueMask",
    "blur_scores",
    "describe_flags",
    "detect_tissue",
    "iou",
    "mask_to_geojson",
    "qc_flags",
    "render_overlay",
    "resample_nearest",
    "saturation_otsu_mask",
    "slide_tissue_mask",
    "tile_qc",
    "write_geojson",
    "write_png",
]
