"""Helpers for the offline deployment checks (tests/test_deploy_*.py)."""
