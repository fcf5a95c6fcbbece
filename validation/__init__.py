"""Validation (design stage 12), pure library code (no Dagster):

- ``pixel``: pixel-level precision/recall/F1/IoU (training-time validation);
- ``references``: reference datasets (ARTS, van der Sluijs Peel Plateau, the digitisation experiment, point
  tables) in one schema;
- ``objects``: object-level matching of detections to reference features per region and year;
- ``tables``: the paper's Table 4 (mean ± sd over years) and per-year summaries, as frames and markdown;
- ``landcover``: false positives by majority land-cover class (Table 5 layout).
"""
