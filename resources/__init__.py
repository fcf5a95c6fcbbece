"""Connections and settings for the outside world: storage root, STAC catalogue, aux-layer sources, GPU, DuckDB.

Import the module you need (``resources.storage``, ``resources.duckdb``...); ``resources.defaults`` builds the
code location's resources from the environment.
"""
