"""Exporting: the layout, the hash chain, the pipeline and its sinks (Parquet, Delta), reading back, verifying, signing."""
