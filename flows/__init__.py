"""Prefect flows, task wrappers, deployments and the `recs` CLI (the only package that imports Prefect)."""
