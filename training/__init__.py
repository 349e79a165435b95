"""Training: omics tables and signatures (`training.omics`), cohorts and leakage-safe
splits (`training.cohorts`), MIL models on Ray Train (`training.mil`), spatial models
over tile and tissue-module graphs (`training.spatial`), and quick linear / kNN probes
on slide embeddings (`training.probe`)."""

__all__ = ["cohorts", "mil", "omics", "probe", "spatial"]
