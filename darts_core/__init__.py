"""darts_core."""
