"""Ingestion: slide access (readers, URIs, staging), synthetic slides, and (later) tissue
detection, tile planning, stain normalization and the distributed pipeline."""
