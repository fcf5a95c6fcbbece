"""darts_assets."""
