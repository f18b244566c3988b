"""Feature engineering: DuckDB SQL files, Polars helpers, LightFM matrices, the data contracts."""
