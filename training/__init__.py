"""Training: omics tables and signatures (`training.omics`), cohorts and leakage-safe
splits (`training.cohorts`), and (later) bag datasets and MIL models on Ray Train."""

__all__ = ["cohorts", "omics"]
