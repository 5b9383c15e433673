"""Auditing: the checks, the engine, the keys, checkpoints, one run, watching, and the report with its verdict."""
