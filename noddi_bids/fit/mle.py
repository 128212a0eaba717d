"""Batched Rician maximum-likelihood NODDI fitting (the conventional "MLE" estimator).

Follows the NODDI MATLAB Toolbox recipe: noise sigma from the b = 0 images, a coarse grid search
for the starting point with the orientation from the diffusion tensor, then a bounded
second-order optimiser of the Rician likelihood (Levenberg-Marquardt here). All voxels of a chunk
are solved together by compiled kernels (:mod:`noddi_bids.fit.batch`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from noddi_bids.fit.batch import fit_voxels
from noddi_bids.fit.grid import default_grid, tensor_directions
from noddi_bids.fit.tables import SignalTables, build_tables
from noddi_bids.fit.threads import set_threads
from noddi_bids.model.noddi import D_ISO, D_PAR
from noddi_bids.progress import no_bar

LOGGER = logging.getLogger(__name__)


class SchemeLike(Protocol):
    """What the fitter needs of an acquisition scheme."""

    bvals: np.ndarray
    bvecs: np.ndarray
    b0_mask: np.ndarray
    b0_threshold: float


@dataclass(frozen=True)
class NoddiFit:
    """Result of :meth:`NoddiMLE.fit`, one row per voxel of the mask (NaN where not fitted).

    Attributes
    ----------
    odi, ndi, fwf : ndarray, shape (N,)
        Orientation dispersion index, neurite density index, free-water fraction.
    direction : ndarray, shape (N, 3)
        Unit mean fibre orientation.
    s0 : ndarray, shape (N,)
        Fitted b = 0 signal.
    log_likelihood : ndarray, shape (N,)
        Rician log-likelihood at the estimate.
    converged : ndarray of bool, shape (N,)
        Optimiser stopped on its tolerance (not the iteration limit).
    iterations : ndarray of int, shape (N,)
        Optimiser iterations used.
    valid : ndarray of bool, shape (N,)
        Voxel had finite data, positive mean b = 0 and a positive sigma, and was fitted.
    """

    odi: np.ndarray
    ndi: np.ndarray
    fwf: np.ndarray
    direction: np.ndarray
    s0: np.ndarray
    log_likelihood: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    valid: np.ndarray

    @property
    def parameters(self) -> np.ndarray:
        """ODI, NDI, FWF stacked, shape (N, 3)."""
        return np.stack([self.odi, self.ndi, self.fwf], axis=-1)


def estimate_sigma(data: np.ndarray, b0_mask: np.ndarray | None = None) -> np.ndarray:
    """Per-voxel noise sigma: standard deviation (ddof=1) of the b = 0 images.

    Parameters
    ----------
    data : ndarray, shape (N, M)
    b0_mask : ndarray of bool, shape (M,), optional
        Which columns of ``data`` are b = 0 images (default: all of them).

    Returns
    -------
    ndarray, shape (N,)
    """
    b0_images = data if b0_mask is None else data[:, b0_mask]
    if b0_images.shape[1] < 2:
        raise ValueError(
            "Estimating the noise sigma needs at least two b = 0 volumes; pass sigma explicitly."
        )
    return np.std(b0_images, axis=1, ddof=1)


class NoddiMLE:
    """Rician maximum-likelihood NODDI model for one acquisition scheme.

    Parameters
    ----------
    scheme : Scheme
        Acquisition scheme (b-values in s/mm^2, unit b-vectors, b = 0 mask).
    d_par, d_iso : float
        Intra-neurite parallel and free-water diffusivities, mm^2/s.
    max_iter : int
        Levenberg-Marquardt iteration limit per voxel.
    tolerance : float
        Stop when the optimiser's quadratic model predicts a log-likelihood gain below this and
        so do its last two gains continued geometrically (1e-4 leaves 0.26 % of voxels more than
        1e-3 below a fit converged to 1e-10; ``benchmarks/fit_tolerance.py``).
    chunk_size : int
        Voxels solved together (bounds memory).
    n_threads : int, optional
        Threads of the compiled kernels (default: all cores).
    n_starts : int
        Optimiser runs per voxel after the grid search, from the best grid points of the most
        likely grid ODI values (the likelihood is multimodal at low NDI, where sticks and
        hindered compartment trade off); the most likely result is kept.
    """

    def __init__(
        self,
        scheme: SchemeLike,
        d_par: float = D_PAR,
        d_iso: float = D_ISO,
        max_iter: int = 200,
        tolerance: float = 1e-4,
        chunk_size: int = 50_000,
        n_threads: int | None = None,
        n_starts: int = 3,
    ) -> None:
        self.scheme = scheme
        # The kernels take the measurements ordered by b-value: b exactly 0 first (their signal
        # is s0, no model work), then one run per b-value, inside which the stick series is fixed.
        self._order = np.argsort(scheme.bvals, kind="stable")
        self.tables: SignalTables = build_tables(
            scheme.bvals[self._order], scheme.bvecs[self._order], d_par, d_iso
        )
        self.max_iter = max_iter
        self.tolerance = tolerance
        self.chunk_size = chunk_size
        self.n_threads = n_threads
        self.n_starts = n_starts
        self.grid = default_grid()

    def fit(
        self,
        data: np.ndarray,
        sigma: float | np.ndarray | None = None,
        init: dict[str, np.ndarray] | None = None,
        progress: bool | None = None,
    ) -> NoddiFit:
        """Fit voxels.

        Parameters
        ----------
        data : ndarray, shape (N, M)
            Signals of N voxels (any scale; negative values are clipped to 0).
        sigma : float or ndarray of shape (N,), optional
            Rician noise sigma in the units of ``data``; default: per-voxel standard deviation of
            the b = 0 images (NODDI toolbox).
        init : dict, optional
            Start from given parameters instead of the grid search: keys ``odi``, ``ndi``,
            ``fwf`` (N,), ``direction`` (N, 3) and optionally ``s0`` (N,). Used to label
            synthetic training data.
        progress : bool, optional
            Show a progress bar (default: when attached to a terminal).

        Returns
        -------
        NoddiFit
        """
        data, mean_b0, sigma, valid = self._noise(data, sigma)
        n_vox = data.shape[0]
        n_skipped = n_vox - int(valid.sum())
        if n_skipped:
            LOGGER.warning(
                "Skipped %d of %d voxels (non-finite data, non-positive b = 0 or zero noise).",
                n_skipped,
                n_vox,
            )
        result = _empty_result(n_vox, valid)
        set_threads(self.n_threads)
        index = np.flatnonzero(valid)
        data = np.ascontiguousarray(data)
        with tqdm(total=index.size, unit="vox", desc="MLE fit", disable=no_bar(progress)) as bar:
            for start in range(0, index.size, self.chunk_size):
                rows = index[start : start + self.chunk_size]
                self._fit_chunk(data, sigma[rows], mean_b0[rows], init, rows, result)
                bar.update(rows.size)
        return NoddiFit(**result)

    def standard_deviations(
        self, data: np.ndarray, fit: NoddiFit, sigma: float | np.ndarray | None = None
    ) -> np.ndarray:
        """Return the SDs of the fitted ODI, NDI and FWF (:mod:`noddi_bids.fit.uncertainty`).

        From the expected Fisher information of the Rician likelihood at the estimate, with the
        same noise sigma as the fit.

        Parameters
        ----------
        data : ndarray, shape (N, M)
            The signals :meth:`fit` was given.
        fit : NoddiFit
            Its result.
        sigma : float or ndarray of shape (N,), optional
            As given to :meth:`fit`.

        Returns
        -------
        ndarray, shape (N, 3)
            SDs of ODI, NDI, FWF; NaN where the voxel was not fitted or a parameter has no
            information (a singular information matrix).
        """
        from noddi_bids.fit.uncertainty import standard_deviations

        data, _, sigma, valid = self._noise(data, sigma)
        result = np.full((data.shape[0], 3), np.nan)
        estimates = np.column_stack([fit.odi, fit.ndi, fit.fwf, fit.s0])
        rows = np.flatnonzero(valid & np.all(np.isfinite(estimates), axis=1))
        set_threads(self.n_threads)
        data = np.ascontiguousarray(data)
        for start in range(0, rows.size, self.chunk_size):
            chunk = rows[start : start + self.chunk_size]
            result[chunk] = standard_deviations(
                data, chunk, self._order, sigma[chunk], estimates[chunk], fit.direction[chunk],
                self.tables.packed(),
            )  # fmt: skip
        return result

    def _noise(
        self, data: np.ndarray, sigma: float | np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Check the data; return it, its mean b = 0, noise sigma and the voxels to fit.

        Raises
        ------
        ValueError
            If ``data`` is not (voxels, measurements of the scheme).
        """
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.tables.bvals.shape[0]:
            raise ValueError(
                f"data must have shape (voxels, {self.tables.bvals.shape[0]}), got {data.shape}"
            )
        b0_mask = np.asarray(self.scheme.b0_mask)
        finite = np.all(np.isfinite(data), axis=1)
        b0_images = np.where(finite[:, None], np.maximum(data[:, b0_mask], 0.0), 0.0)
        mean_b0 = b0_images.mean(axis=1)
        sigma = (
            estimate_sigma(b0_images)
            if sigma is None
            else np.broadcast_to(np.asarray(sigma, dtype=np.float64), (data.shape[0],))
        )
        valid = finite & (mean_b0 > 0) & np.isfinite(sigma) & (sigma > 0)
        return data, mean_b0, sigma, valid

    def _fit_chunk(self, data, sigma, mean_b0, init, rows, result) -> None:
        """Fit the voxels ``rows`` of ``data`` (finite; negative values are clipped to 0)."""
        scheme = self.scheme
        if init is None:
            start = np.column_stack([np.zeros((rows.size, 3)), mean_b0])
            directions = tensor_directions(
                np.maximum(data[rows], 0.0), scheme.bvals, scheme.bvecs, scheme.b0_threshold
            )
        else:
            s0 = np.asarray(init.get("s0", mean_b0), dtype=np.float64)
            s0 = np.broadcast_to(s0, (result["odi"].size,))[rows] if "s0" in init else s0
            start = np.column_stack(
                [np.asarray(init[key], dtype=np.float64)[rows] for key in ("odi", "ndi", "fwf")]
                + [s0]
            )
            directions = np.asarray(init["direction"], dtype=np.float64)[rows]
        params, direction, log_likelihood, converged, iterations = fit_voxels(
            data,
            rows,
            self._order,
            np.ascontiguousarray(sigma),
            np.ascontiguousarray(start),
            np.ascontiguousarray(directions),
            self.n_starts if init is None else 0,
            *self.grid,
            self.tables.packed(),
            self.max_iter,
            self.tolerance,
        )
        for column, key in enumerate(("odi", "ndi", "fwf", "s0")):
            result[key][rows] = params[:, column]
        result["direction"][rows] = direction
        result["log_likelihood"][rows] = log_likelihood
        result["converged"][rows] = converged
        result["iterations"][rows] = iterations


def _empty_result(n_vox: int, valid: np.ndarray) -> dict[str, np.ndarray]:
    nan = np.full(n_vox, np.nan)
    return {
        "odi": nan.copy(),
        "ndi": nan.copy(),
        "fwf": nan.copy(),
        "direction": np.full((n_vox, 3), np.nan),
        "s0": nan.copy(),
        "log_likelihood": nan.copy(),
        "converged": np.zeros(n_vox, dtype=bool),
        "iterations": np.zeros(n_vox, dtype=np.int64),
        "valid": valid,
    }
