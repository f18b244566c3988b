"""LightFM training, evaluation, baselines, top-K scoring and the MLflow pyfunc model."""
