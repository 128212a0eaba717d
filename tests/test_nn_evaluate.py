"""Tests for noddi_bids.nn.evaluate, figures and noddi-bids-evaluate."""

import numpy as np
import pandas as pd
from numpy.testing import assert_allclose

from noddi_bids.cli.networks import evaluate_main
from noddi_bids.model.scheme import reference_scheme
from noddi_bids.nn.evaluate import (
    GRID_FWF,
    GRID_NDI,
    GRID_ODI,
    evaluate,
    evaluation_grid,
    overall,
    summarise,
)


def test_grid_is_the_studys():
    grid = evaluation_grid()
    assert grid.shape == (500, 3)
    assert_allclose(GRID_ODI, np.linspace(0.05, 0.95, 10))
    assert_allclose(GRID_NDI, np.linspace(0.05, 0.95, 10))
    assert_allclose(GRID_FWF, np.linspace(0.05, 0.45, 5))


def test_summary_statistics():
    grid = np.array([[0.2, 0.5, 0.1], [0.6, 0.3, 0.4]])
    values = np.stack([grid + 0.1, grid - 0.1 + 0.05], axis=1)  # two repeats
    table = summarise(grid, {"x": values})
    assert_allclose(table["odi_mean"], grid[:, 0] + 0.025)
    assert_allclose(table["ndi_bias"], 0.025)
    assert_allclose(table["fwf_sd"], 0.075)  # population SD of +0.1 and -0.05
    summary = overall(table)
    assert_allclose(summary.loc["x", "odi_abs_bias"], 0.025)
    assert_allclose(summary.loc["x", "ndi_sd"], 0.075)


def test_evaluate_runs_estimators_on_shared_signals():
    grid = evaluation_grid(GRID_ODI[:2], GRID_NDI[:2], GRID_FWF[:1])
    seen = []

    def oracle(noisy):
        seen.append(noisy)
        return np.repeat(grid, 4, axis=0)

    result = evaluate(reference_scheme(), {"a": oracle, "b": oracle}, grid, n_repeats=4)
    assert_allclose(seen[0], seen[1])
    assert seen[0].shape == (16, 81)
    assert result.estimates["a"].shape == (4, 4, 3)
    assert_allclose(result.table[["odi_bias", "ndi_sd"]].to_numpy(), 0.0)


def test_evaluate_cli_writes_tables_and_figures(tmp_path):
    argv = ["--model", "nn-gt", "--model", "MINE=nn-mle", "--no-mle", "--repeats", "2"]
    assert evaluate_main([*argv, "--out-dir", str(tmp_path), "--threads", "1"]) == 0
    table = pd.read_csv(tmp_path / "evaluation.tsv", sep="\t")
    assert set(table["estimator"]) == {"NN_GT", "MINE"} and len(table) == 1000
    summary = pd.read_csv(tmp_path / "summary.tsv", sep="\t", index_col=0)
    assert list(summary.index) == ["NN_GT", "MINE"]
    assert (tmp_path / "validation_bias.png").stat().st_size > 10_000
    assert (tmp_path / "validation_sd.png").is_file()
    assert evaluate_main(["--no-mle", "--out-dir", str(tmp_path)]) == 1
