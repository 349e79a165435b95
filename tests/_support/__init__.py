"""Helpers shared by the test modules (and the benchmarks' local S3 server).

Test modules import from here, never from one another: ``slides`` (reader ground truth,
read recording), ``stain`` (H&E tile builders), ``omics`` (planted expression cohorts),
``store`` (feature store payloads and worker processes), ``moto`` (a local S3 server).
"""
