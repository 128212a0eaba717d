"""Figures of the synthetic evaluation: bias quivers, SD lines, network-versus-MLE scatter."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from noddi_bids.nn.synth import PARAMETERS  # noqa: E402

#: Pairs of parameters shown as 2-D marginal planes in the quiver plots.
PLANES = (("odi", "ndi"), ("odi", "fwf"), ("ndi", "fwf"))
#: Points drawn per scatter panel (a random subset keeps the files small).
SCATTER_POINTS = 5000
_LABELS = {"odi": "ODI", "ndi": "NDI", "fwf": "FWF"}


def _save(figure: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def bias_quiver(table: pd.DataFrame, path: str | Path) -> Path:
    """Bias arrows from truth to mean estimate over each 2-D marginal plane.

    One row per estimator, one column per plane of :data:`PLANES`; the bias is averaged over
    the parameter not shown. Arrow colour is the bias magnitude.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`noddi_bids.nn.evaluate.summarise`.
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
    """
    names = list(dict.fromkeys(table["estimator"]))
    figure, axes = plt.subplots(
        len(names),
        len(PLANES),
        figsize=(4.4 * len(PLANES), 3.8 * len(names)),
        squeeze=False,
        layout="constrained",
    )
    for row, name in enumerate(names):
        part = table[table["estimator"] == name]
        for col, (px, py) in enumerate(PLANES):
            plane = part.groupby([f"{px}_true", f"{py}_true"], as_index=False)[
                [f"{px}_bias", f"{py}_bias"]
            ].mean()
            u, v = plane[f"{px}_bias"].to_numpy(), plane[f"{py}_bias"].to_numpy()
            ax = axes[row, col]
            arrows = ax.quiver(
                plane[f"{px}_true"], plane[f"{py}_true"], u, v, np.hypot(u, v),
                angles="xy", scale_units="xy", scale=1, cmap="viridis", width=0.006,
            )  # fmt: skip
            figure.colorbar(arrows, ax=ax, label="|bias|")
            ax.set(xlabel=_LABELS[px], ylabel=_LABELS[py], xlim=(0, 1), ylim=(0, 1))
            ax.set_title(f"{name}: bias in {_LABELS[px]}-{_LABELS[py]}", fontsize=10)
    return _save(figure, path)


def sd_lines(table: pd.DataFrame, path: str | Path) -> Path:
    """SD of each parameter against its true value (mean over the other parameters).

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`noddi_bids.nn.evaluate.summarise`.
    path : str or Path
        Output PNG.

    Returns
    -------
    Path
    """
    figure, axes = plt.subplots(
        1, len(PARAMETERS), figsize=(4.2 * len(PARAMETERS), 3.6), layout="constrained"
    )
    for ax, p in zip(axes, PARAMETERS, strict=True):
        for name, part in table.groupby("estimator", sort=False):
            line = part.groupby(f"{p}_true")[f"{p}_sd"].mean()
            ax.plot(line.index, line.to_numpy(), marker="o", label=name)
        ax.set(xlabel=f"true {_LABELS[p]}", ylabel=f"SD of {_LABELS[p]}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    return _save(figure, path)


def scatter_versus(
    estimates: Mapping[str, np.ndarray], reference: str, path: str | Path, seed: int = 0
) -> Path:
    """Scatter of each other estimator's estimates against the `reference` estimator's.

    Parameters
    ----------
    estimates : mapping of str to ndarray of shape (P, R, 3)
        Estimates of the same noisy signals.
    reference : str
        Estimator on the x-axis (the MLE fit).
    path : str or Path
        Output PNG.
    seed : int
        Seed of the subset drawn.

    Returns
    -------
    Path
    """
    others = [name for name in estimates if name != reference]
    x_all = estimates[reference].reshape(-1, len(PARAMETERS))
    pick = np.random.default_rng(seed).choice(
        x_all.shape[0], min(SCATTER_POINTS, x_all.shape[0]), replace=False
    )
    figure, axes = plt.subplots(
        len(others), len(PARAMETERS), figsize=(3.8 * len(PARAMETERS), 3.6 * len(others)),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for row, name in enumerate(others):
        y_all = estimates[name].reshape(-1, len(PARAMETERS))
        for col, p in enumerate(PARAMETERS):
            ax = axes[row, col]
            ax.scatter(x_all[pick, col], y_all[pick, col], s=2, alpha=0.3)
            ax.plot([0, 1], [0, 1], color="k", lw=0.8)
            ok = np.isfinite(x_all[:, col]) & np.isfinite(y_all[:, col])
            r = np.corrcoef(x_all[ok, col], y_all[ok, col])[0, 1]
            ax.set(xlabel=f"{reference} {_LABELS[p]}", ylabel=f"{name} {_LABELS[p]}")
            ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
            ax.set_title(f"r = {r:.3f}", fontsize=10)
    return _save(figure, path)
