"""DARTS on Dagster: the code location, sensors, jobs and the darts CLI."""
