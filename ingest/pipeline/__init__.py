"""The distributed ingestion pipeline: sources → plan → read → encode → store."""
