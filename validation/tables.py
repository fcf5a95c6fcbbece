"""Validation tables in the paper's layouts: Table 4 (object-level scores per region, mean ± sd over years).

Input is the tidy per-(region, year) frame of :func:`validation.objects.evaluate_objects` (``scores``); frames
of several validation sets can be concatenated with a ``validation_set`` column, which then leads the table.
Region-years the coverage did not reach (``covered`` False) are left out: the region was not observed then.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tabulate import tabulate

from darts_core.params import ValidationParams
from validation.objects import DEFAULT_PARAMS, object_scores

SCORES = ("precision", "recall", "f1")
COUNTS = ("true_positives", "false_positives", "false_negatives")
TABLE4_COLUMNS = (
    "region",
    "years",
    *(f"{score}_{statistic}" for score in SCORES for statistic in ("mean", "sd")),
    *COUNTS,
    "references",
)
TABLE4_HEADERS = {
    "validation_set": "Val Set",
    "region": "Sub Region",
    "years": "Years",
    "precision": "Precision",
    "recall": "Recall",
    "f1": "F1",
    "true_positives": "TP",
    "false_positives": "FP",
    "false_negatives": "FN",
    "references": "Reference features [#]",
}
YEAR_SUMMARY_COLUMNS = ("year", *COUNTS, "references_hit", *SCORES, "f1_region_mean", "f1_region_sd", "regions")


def observed(scores: pd.DataFrame) -> pd.DataFrame:
    """The region-years the coverage reached."""
    return scores[scores["covered"].astype(bool)] if "covered" in scores.columns else scores


def _group_columns(scores: pd.DataFrame) -> list[str]:
    return ["validation_set", "region"] if "validation_set" in scores.columns else ["region"]


def _year_span(years: pd.Series) -> str:
    first, last, count = int(years.min()), int(years.max()), years.nunique()
    return str(first) if count == 1 else f"{first}-{last}" if count == last - first + 1 else f"{count} years"


def table4(scores: pd.DataFrame, params: ValidationParams = DEFAULT_PARAMS) -> pd.DataFrame:
    """Per region (and validation set): precision, recall and F1 as mean and standard deviation over the years
    (``params.sd_ddof``; NaN for a single year), TP/FP/FN summed over the years, ``references`` = the most
    reference features counted in one year, ``years`` = the years evaluated. Columns: ``TABLE4_COLUMNS``."""
    keys = _group_columns(scores)
    grouped = observed(scores).groupby(keys, sort=True)
    table = grouped[list(COUNTS)].sum().astype(int)
    for score in SCORES:
        table[f"{score}_mean"] = grouped[score].mean()
        table[f"{score}_sd"] = grouped[score].std(ddof=params.sd_ddof)
    table["references"] = grouped["references"].max().astype(int)
    table["years"] = grouped["year"].agg(_year_span)
    return table.reset_index()[[*keys[:-1], *TABLE4_COLUMNS]]


def year_summary(scores: pd.DataFrame, params: ValidationParams = DEFAULT_PARAMS) -> pd.DataFrame:
    """Per year over all regions: pooled counts and their precision/recall/F1 (the paper's "overall" scores),
    and the mean and standard deviation (``params.sd_ddof``) of the regions' F1 (its "mean annual performance").
    Columns: ``YEAR_SUMMARY_COLUMNS``."""
    grouped = observed(scores).groupby("year", sort=True)
    table = grouped[[*COUNTS, "references_hit"]].sum().astype(int)
    pooled = [
        object_scores(row.true_positives, row.false_positives, row.references_hit, row.false_negatives)
        for row in table.itertuples()
    ]
    table[list(SCORES)] = pd.DataFrame(pooled, index=table.index)
    table["f1_region_mean"] = grouped["f1"].mean()
    table["f1_region_sd"] = grouped["f1"].std(ddof=params.sd_ddof)
    table["regions"] = grouped.size()
    return table.reset_index()[list(YEAR_SUMMARY_COLUMNS)]


def mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """``0.519 ± 0.078``; the mean alone when the sd is undefined (one year)."""
    return f"{mean:.{digits}f}" if np.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def table4_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """Table 4 as a GitHub markdown table (scores as mean ± sd)."""
    shown = table[[column for column in ("validation_set", "region", "years") if column in table.columns]].copy()
    for score in SCORES:
        shown[score] = [
            mean_sd(m, s, digits) for m, s in zip(table[f"{score}_mean"], table[f"{score}_sd"], strict=True)
        ]
    for column in (*COUNTS, "references"):
        shown[column] = table[column]
    return tabulate(shown.rename(columns=TABLE4_HEADERS), headers="keys", tablefmt="github", showindex=False)
