"""Group level through the real command line, with participants lacking MLE or tissues."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import check_table_precision, make_bids_dataset

from noddi_bids.cli.run import main


def run(*args: object) -> int:
    return main([str(a) for a in args])


def test_group_tables(tmp_path, model_cache, capsys):
    phantom = make_bids_dataset(tmp_path / "bids", subjects=("01", "02", "03"))
    out, work = tmp_path / "out", tmp_path / "work"
    common = ["-w", work, "--nprocs", "1"]
    assert run(phantom.root, out, "participant", "--participant-label", "01", "--mle", *common) == 0
    assert run(phantom.root, out, "participant", "--participant-label", "02", "03", *common) == 0
    # sub-03 lacks a tissue: drop its CSF rows
    table_03 = out / "sub-03" / "dwi" / "sub-03_desc-tissue_stats.tsv"
    table = pd.read_csv(table_03, sep="\t")
    table[table["tissue"] != "CSF"].to_csv(table_03, sep="\t", index=False, na_rep="n/a")

    assert run(phantom.root, out, "group") == 0
    long = pd.read_csv(out / "group_tissue_stats.tsv", sep="\t")
    assert list(long.columns) == [
        "participant_id", "tissue", "estimator", "parameter", "n_voxels", "mean", "sd",
    ]  # fmt: skip
    assert sorted(long["participant_id"].unique()) == ["sub-01", "sub-02", "sub-03"]
    assert set(long.loc[long["estimator"] == "mle", "participant_id"]) == {"sub-01"}
    assert not ((long["tissue"] == "CSF") & (long["parameter"] != "fwf")).any()
    summary = pd.read_csv(out / "group_summary.tsv", sep="\t")
    assert list(summary.columns) == ["tissue", "estimator", "parameter", "n", "mean", "sd"]
    row = summary.query("tissue == 'WM' and estimator == 'nnmle' and parameter == 'ndi'").iloc[0]
    per_participant = long.query("tissue == 'WM' and estimator == 'nnmle' and parameter == 'ndi'")
    assert row["n"] == 3
    # the tables hold 4 decimals: the summary is computed before rounding
    np.testing.assert_allclose(row["mean"], per_participant["mean"].mean(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(row["sd"], per_participant["mean"].std(ddof=1), rtol=0, atol=1e-4)
    for name in ("group_tissue_stats", "group_summary"):
        check_table_precision(out / f"{name}.tsv")
    csf = summary.query("tissue == 'CSF' and estimator == 'nnmle'").iloc[0]
    assert csf["n"] == 2 and csf["parameter"] == "fwf"
    mle = summary.query("tissue == 'GM' and estimator == 'mle' and parameter == 'odi'").iloc[0]
    assert mle["n"] == 1 and np.isnan(mle["sd"])

    assert run(phantom.root, out, "group", "--participant-label", "02") == 0
    only = pd.read_csv(out / "group_tissue_stats.tsv", sep="\t")
    assert set(only["participant_id"]) == {"sub-02"}
    assert run(phantom.root, out, "group", "--participant-label", "09") == 18
    assert "09" in capsys.readouterr().err
