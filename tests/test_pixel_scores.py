"""Pixel scores against hand-counted cases."""

import numpy as np
import pytest

from validation.pixel import pixel_scores


def test_counts_and_scores_on_valid_pixels_only():
    predicted = np.array([[1, 1, 0, 0], [1, 0, 0, 1]])
    reference = np.array([[1, 0, 1, 0], [1, 0, 0, 1]])
    valid = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    scores = pixel_scores(predicted, reference, valid)
    assert (scores["true_positives"], scores["false_positives"], scores["false_negatives"]) == (2, 1, 1)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3) and scores["iou"] == pytest.approx(0.5)


def test_empty_prediction_and_reference_score_zero():
    empty = np.zeros((3, 3), dtype=bool)
    assert pixel_scores(empty, empty)["f1"] == 0.0
