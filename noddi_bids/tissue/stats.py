"""Per-tissue summaries of NODDI maps (the shape of the study's in-vivo table) and group tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from noddi_bids.vocabulary import (
    ESTIMATORS,
    FLAGS,
    MAPS,
    PARAMETERS,
    QUALITY_MAPS,
    TISSUE_NAMES,
    TISSUES,
)

#: Parameters reported per tissue (CSF: only the free-water fraction is meaningful).
TISSUE_PARAMETERS = {"WM": PARAMETERS, "GM": PARAMETERS, "CSF": ("fwf",)}
#: Goodness-of-fit columns of the per-run tissue table (n/a without the maps).
QUALITY_COLUMNS = ("nrmse_median", "outofmodel_fraction")
#: Maps of an estimator the table reads: its parameters and, when written, its goodness of fit.
TABLE_MAPS = (*PARAMETERS, "nrmse", "outofmodel")
#: Columns of the per-run tissue table.
COLUMNS = (
    ("tissue", "estimator", "n_voxels")
    + tuple(f"{p}_{s}" for p in PARAMETERS for s in ("mean", "sd"))
    + QUALITY_COLUMNS
)
#: Decimals of the statistics written to the tables. ODI, NDI and FWF lie in [0, 1] and their
#: estimation errors are of order 1e-2 (mean absolute errors of 0.02-0.06 per tissue on the
#: example, ``python -m noddi_bids.example compare``): a fifth decimal carries no information.
DECIMALS = 4
#: The parameters in words, and their units as in the map sidecars (ODI is an index, NDI and FWF
#: are volume fractions; all are dimensionless, in [0, 1]).
_NAMES = {p: MAPS[p].title for p in PARAMETERS}
_UNITS = {p: MAPS[p].units for p in PARAMETERS}
_TISSUE = {"Description": "Tissue class (label- of the tissue masks)", "Levels": TISSUE_NAMES}
_ESTIMATOR = {"Description": f"desc- label of the estimator ({', '.join(ESTIMATORS)})"}
_N_VOXELS = {"Description": "Tissue voxels where the estimator's three maps are finite"}
_PARAMETER = {"Description": "NODDI parameter, dimensionless, in [0, 1]", "Levels": _NAMES}
#: Units of a column of values of the parameter named in the ``parameter`` column.
_BY_PARAMETER = ", ".join(f"{units} ({p})" for p, units in _UNITS.items())
#: BIDS column descriptions (sidecar JSON) of the per-run tissue table (:func:`tissue_table`).
TABLE_COLUMNS: dict[str, dict[str, Any]] = {
    "tissue": _TISSUE,
    "estimator": _ESTIMATOR,
    "n_voxels": _N_VOXELS,
    **{
        f"{p}_{stat}": {
            "Description": f"{what} {_NAMES[p]} within the tissue, {DECIMALS} decimals"
            + ("" if p in TISSUE_PARAMETERS["CSF"] else " (n/a for CSF)"),
            "Units": _UNITS[p],
        }
        for p in PARAMETERS
        for stat, what in (("mean", "Mean"), ("sd", "Population SD of the"))
    },
    "nrmse_median": {
        "Description": f"Median within the tissue of the estimate's {QUALITY_MAPS['nrmse'].title}"
        f" ({QUALITY_MAPS['nrmse'].description}), {DECIMALS} decimals; n/a without the map",
        "Units": QUALITY_MAPS["nrmse"].units,
    },
    "outofmodel_fraction": {
        "Description": f"Fraction of the tissue's voxels flagged {FLAGS['outofmodel'].display} "
        f"({FLAGS['outofmodel'].words}), {DECIMALS} decimals; n/a without the flags",
        "Units": "fraction",
    },
}
#: Column descriptions of ``group_tissue_stats.tsv`` (entity columns: :func:`group_columns`).
LONG_COLUMNS: dict[str, dict[str, Any]] = {
    "tissue": _TISSUE,
    "estimator": _ESTIMATOR,
    "parameter": _PARAMETER,
    "n_voxels": _N_VOXELS,
    "mean": {"Description": f"Mean of the parameter within the tissue, {DECIMALS} decimals",
             "Units": _BY_PARAMETER},
    "sd": {"Description": f"Population SD of the parameter within the tissue, {DECIMALS} "
           "decimals", "Units": _BY_PARAMETER},
}  # fmt: skip
#: Column descriptions of ``group_summary.tsv``.
SUMMARY_COLUMNS: dict[str, dict[str, Any]] = {
    "tissue": _TISSUE,
    "estimator": _ESTIMATOR,
    "parameter": _PARAMETER,
    "n": {"Description": "Runs with a value"},
    "mean": {"Description": f"Mean of the per-run means, {DECIMALS} decimals",
             "Units": _BY_PARAMETER},
    "sd": {"Description": f"Sample SD (ddof 1) of the per-run means, {DECIMALS} decimals; n/a "
           "for a single run", "Units": _BY_PARAMETER},
}  # fmt: skip


def tissue_table(
    maps: Mapping[str, Mapping[str, np.ndarray]], masks: Mapping[str, np.ndarray]
) -> pd.DataFrame:
    """Mean and SD of ODI, NDI and FWF within each tissue, for each estimator.

    Parameters
    ----------
    maps : mapping
        ``{estimator: {"odi": map, "ndi": map, "fwf": map}}``, arrays of one shape.
    masks : mapping
        ``{"WM": mask, "GM": mask, "CSF": mask}``, boolean arrays of the same shape.

    Returns
    -------
    pandas.DataFrame
        One row per tissue x estimator (:data:`COLUMNS`). ``n_voxels`` counts the tissue voxels
        where the estimator's three maps are finite; SDs are population SDs (divide by N);
        statistics not reported for a tissue (CSF: ODI, NDI) and empty tissues are NaN. When
        an estimator's maps include ``nrmse`` and ``outofmodel``, the median NRMSE and the
        fraction of voxels out of model over the same voxels (else NaN).
    """
    rows = []
    for tissue in TISSUES:
        if tissue not in masks:
            continue
        for estimator, values in maps.items():
            stack = np.stack([np.asarray(values[p])[masks[tissue]] for p in PARAMETERS])
            finite = np.all(np.isfinite(stack), axis=0)
            row: dict[str, object] = {
                "tissue": tissue,
                "estimator": estimator,
                "n_voxels": int(finite.sum()),
            }
            for parameter, column in zip(PARAMETERS, stack, strict=True):
                shown = parameter in TISSUE_PARAMETERS[tissue] and finite.any()
                row[f"{parameter}_mean"] = float(np.mean(column[finite])) if shown else np.nan
                row[f"{parameter}_sd"] = float(np.std(column[finite])) if shown else np.nan
            row.update(_quality(values, masks[tissue], finite))
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _quality(
    values: Mapping[str, np.ndarray], mask: np.ndarray, finite: np.ndarray
) -> dict[str, float]:
    """Median NRMSE and out-of-model fraction over the ``finite`` voxels of ``mask``."""
    row = dict.fromkeys(QUALITY_COLUMNS, np.nan)
    if "nrmse" in values and finite.any():
        row["nrmse_median"] = float(np.nanmedian(np.asarray(values["nrmse"])[mask][finite]))
    if "outofmodel" in values and finite.any():
        row["outofmodel_fraction"] = float(np.mean(np.asarray(values["outofmodel"])[mask][finite]))
    return row


def long_table(table: pd.DataFrame, entities: Mapping[str, str]) -> pd.DataFrame:
    """Reshape a per-run tissue table to long format with the run's entities as columns.

    Returns
    -------
    pandas.DataFrame
        Columns: the entity keys, ``tissue``, ``estimator``, ``parameter``, ``n_voxels``,
        ``mean``, ``sd``; rows with no value (CSF ODI/NDI) are dropped.
    """
    rows = []
    for record in table.to_dict("records"):
        for parameter in PARAMETERS:
            mean = record[f"{parameter}_mean"]
            if pd.isna(mean):
                continue
            rows.append(
                {
                    **entities,
                    "tissue": record["tissue"],
                    "estimator": record["estimator"],
                    "parameter": parameter,
                    "n_voxels": record["n_voxels"],
                    "mean": mean,
                    "sd": record[f"{parameter}_sd"],
                }
            )
    return pd.DataFrame(rows)


def group_tables(
    tables: Iterable[tuple[Mapping[str, str], pd.DataFrame]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate per-run tables and summarise them across participants.

    Parameters
    ----------
    tables : iterable
        ``(entities, tissue_table)`` pairs, one per run.

    Returns
    -------
    long : pandas.DataFrame
        All runs in long format (:func:`long_table`).
    summary : pandas.DataFrame
        Per tissue, estimator and parameter: ``n`` (runs with a value) and the
        ``mean`` and sample ``sd`` (ddof 1; n/a for one participant) of the per-run means.
        Runs lacking an estimator or a tissue simply do not contribute to those rows.
    """
    frames = [long_table(table, entities) for entities, table in tables]
    long = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    entity_columns = [c for c in long.columns if c not in _LONG_VALUES]
    long = long[[*entity_columns, *_LONG_VALUES]].fillna({c: "n/a" for c in entity_columns})
    order = {"tissue": list(TISSUES), "parameter": list(PARAMETERS)}
    grouped = long.groupby(["tissue", "estimator", "parameter"], sort=False)["mean"]
    summary = grouped.agg(n="count", mean="mean", sd="std").reset_index()
    for column, values in order.items():
        summary[column] = pd.Categorical(summary[column], categories=values, ordered=True)
    summary = summary.sort_values(["tissue", "estimator", "parameter"]).reset_index(drop=True)
    for column in order:
        summary[column] = summary[column].astype(str)
    return long, summary


_LONG_VALUES = ["tissue", "estimator", "parameter", "n_voxels", "mean", "sd"]


def group_columns(long: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """BIDS column descriptions of ``group_tissue_stats.tsv``, its entity columns included."""
    entities = [column for column in long.columns if column not in LONG_COLUMNS]
    described = {
        column: {"Description": f"{column}- entity of the dwi run (n/a: the run has none)"}
        for column in entities
    }
    described.pop("participant_id", None)
    return {"participant_id": {"Description": "Participant (sub-<label>)"}, **described,
            **LONG_COLUMNS}  # fmt: skip
