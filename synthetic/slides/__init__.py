"""Synthetic H&E-like whole-slide images with ground truth, for tests, demos and benchmarks."""

from synthetic.slides.writer import (
    FAKE_PATIENT_ID,
    SyntheticSlide,
    SyntheticSlideSpec,
    write_synthetic_slide,
)

__all__ = ["FAKE_PATIENT_ID", "SyntheticSlide", "SyntheticSlideSpec", "write_synthetic_slide"]
