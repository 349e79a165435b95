"""Ingestion: slide access (readers, URIs, staging), tissue detection
and QC, tile planning, stain normalization, and the distributed Ray pipeline."""
