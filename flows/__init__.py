"""Prefect flows, task wrappers, deployments and the ``recs`` CLI (the only Prefect user)."""
