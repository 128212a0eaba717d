"""Per-tissue summaries of NODDI maps (the shape of the study's in-vivo table) and group tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

#: Tissue classes, in table order.
TISSUES = ("WM", "GM", "CSF")
#: Parameters summarised, in table order.
PARAMETERS = ("odi", "ndi", "fwf")
#: Parameters reported per tissue (CSF: only the free-water fraction is meaningful).
TISSUE_PARAMETERS = {"WM": PARAMETERS, "GM": PARAMETERS, "CSF": ("fwf",)}
#: Columns of the per-run tissue table.
COLUMNS = ("tissue", "estimator", "n_voxels") + tuple(
    f"{p}_{s}" for p in PARAMETERS for s in ("mean", "sd")
)


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
        statistics not reported for a tissue (CSF: ODI, NDI) and empty tissues are NaN.
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
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


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
