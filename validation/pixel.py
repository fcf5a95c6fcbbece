"""Pixel-level precision, recall, F1 and IoU of a binary prediction against a reference mask."""

from __future__ import annotations

import numpy as np


def pixel_scores(predicted: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Scores over the ``valid`` pixels (all when None); a score with an empty denominator is 0."""
    mask = np.ones(predicted.shape, dtype=bool) if valid is None else valid.astype(bool)
    predicted, reference = predicted.astype(bool)[mask], reference.astype(bool)[mask]
    true_positives = int(np.count_nonzero(predicted & reference))
    false_positives = int(np.count_nonzero(predicted & ~reference))
    false_negatives = int(np.count_nonzero(~predicted & reference))

    def ratio(numerator: int, denominator: int) -> float:
        return numerator / denominator if denominator else 0.0

    return {
        "precision": ratio(true_positives, true_positives + false_positives),
        "recall": ratio(true_positives, true_positives + false_negatives),
        "f1": ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives),
        "iou": ratio(true_positives, true_positives + false_positives + false_negatives),
        "true_positives": true_positives,
        "false_positives": false_positives,
        "false_negatives": false_negatives,
    }
