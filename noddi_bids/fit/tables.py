"""Interpolation tables of the exact NODDI compartments, for fast fitting and synthesis.

The exact model (:mod:`noddi_bids.model.noddi`) costs 48 quadrature nodes per signal. Per
b-value, the Watson-stick signal is a smooth (entire) function of ODI and of ``x = (g.mu)^2``; it
is sampled at Chebyshev points in ``x`` (well conditioned), converted to a power series in ``x``
(evaluated by Horner's rule in the fitter: one fused multiply-add per term, a shorter dependency
chain than Clenshaw's recurrence) on a fine ODI grid, with exact ODI-derivatives, and
interpolated with cubic Hermite polynomials in ODI. The Watson mean of ``(mu.n)^2`` that
drives the hindered compartment is tabulated the same way. Every table value comes from the exact
model, so there is one source of truth; :func:`build_tables` checks the interpolation error.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.polynomial import chebyshev, polynomial

from noddi_bids.fit.polynomial import padded, padded_terms
from noddi_bids.model.noddi import (
    D_ISO,
    D_PAR,
    ODI_MIN,
    kappa_from_odi,
    watson_mean_cos2,
    watson_stick_signal,
)

#: ODI grid intervals of the tables (cubic Hermite error ~1e-9 at this spacing).
N_ODI_INTERVALS = 256
#: Chebyshev degree used to sample each b-value; trailing negligible terms are dropped.
MAX_CHEBYSHEV_TERMS = 40
#: Coefficients below this magnitude (for all ODI) are dropped.
COEFFICIENT_CUTOFF = 1e-10
#: Central-difference step in ODI for the tabulated derivatives.
_DERIVATIVE_STEP = 1e-5


@dataclass(frozen=True)
class SignalTables:
    """Tabulated compartments for one acquisition scheme.

    Attributes
    ----------
    odi_nodes : ndarray, shape (J,)
        Uniform ODI grid from ``ODI_MIN`` to 1.
    stick_coef, stick_coef_dodi : ndarray, shape (B, J, K)
        Power-series coefficients (in ``x = (g.mu)^2``, lowest order first) of the Watson-stick
        signal per unique b-value, and their ODI-derivatives.
    stick_terms : ndarray of int, shape (B,)
        Number of coefficients evaluated per unique b-value: the non-negligible ones, rounded up
        to a multiple of 4 (:mod:`noddi_bids.fit.polynomial`); the arrays are zero-padded.
    mean_cos2, mean_cos2_dodi : ndarray, shape (J,)
        Watson mean of ``(mu.n)^2`` and its ODI-derivative.
    shell_of_measurement : ndarray of int, shape (M,)
        Index into the unique b-values for each measurement.
    bvals : ndarray, shape (M,)
        b-values, s/mm^2.
    bvecs : ndarray, shape (M, 3)
        Unit gradient directions.
    d_par, d_iso : float
        Diffusivities, mm^2/s.
    """

    odi_nodes: np.ndarray
    stick_coef: np.ndarray
    stick_coef_dodi: np.ndarray
    stick_terms: np.ndarray
    mean_cos2: np.ndarray
    mean_cos2_dodi: np.ndarray
    shell_of_measurement: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    d_par: float
    d_iso: float

    @property
    def leading_b0(self) -> int:
        """Number of leading measurements with b = 0 exactly.

        Their signal is s0 whatever the other parameters, so the kernels skip the model there
        (the fitter orders the measurements by b-value, so that all b = 0 measurements lead).
        """
        return self.bvals.size - np.trim_zeros(self.bvals, "f").size

    @property
    def runs(self) -> np.ndarray:
        """Runs of consecutive measurements with one b-value, shape (R, 3): start, stop, index.

        The kernels loop over runs, with the stick's series (row ``index`` of the tables)
        fixed inside each: the processor then predicts the series' loop, and in b-value order
        (the fitter's) there is one run per b-value.
        """
        starts = np.flatnonzero(np.diff(self.shell_of_measurement, prepend=-1))
        stops = np.append(starts[1:], self.shell_of_measurement.size)
        return np.column_stack([starts, stops, self.shell_of_measurement[starts]])

    @property
    def iso_signal(self) -> np.ndarray:
        """Free-water attenuation per measurement, shape (M,)."""
        return np.exp(-self.bvals * self.d_iso)

    @property
    def bvecs_by_axis(self) -> np.ndarray:
        """Gradient directions as rows x, y, z, shape (3, M) (contiguous per axis)."""
        return np.ascontiguousarray(self.bvecs.T)

    def packed(self) -> tuple:
        """Return the tables as the tuple the compiled kernels take (:mod:`.layout`).

        The attributes named in ``PACKED``, in that order.
        """
        return tuple(getattr(self, name) for name in PACKED)


#: Attributes of :class:`SignalTables` in :meth:`SignalTables.packed`, in order; the kernels
#: look values up by their position here.
PACKED = (
    "odi_nodes",
    "stick_coef",
    "stick_coef_dodi",
    "mean_cos2",
    "mean_cos2_dodi",
    "runs",
    "bvals",
    "bvecs_by_axis",
    "d_par",
    "iso_signal",
    "stick_terms",
    "leading_b0",
)


def _chebyshev_points(n: int) -> np.ndarray:
    """Chebyshev points of the first kind on [-1, 1]."""
    return np.cos(np.pi * (np.arange(n) + 0.5) / n)


def _chebyshev_to_power(n: int) -> np.ndarray:
    """Matrix taking Chebyshev coefficients in ``2x - 1`` to power-series coefficients in x."""
    rows = [
        chebyshev.Chebyshev.basis(k, domain=[0.0, 1.0])
        .convert(kind=polynomial.Polynomial, domain=[0.0, 1.0], window=[0.0, 1.0])
        .coef
        for k in range(n)
    ]
    return np.array([np.pad(row, (0, n - row.size)) for row in rows])


def _stick_coefficients(odi: np.ndarray, betas: np.ndarray) -> np.ndarray:
    """Chebyshev coefficients of the stick signal, shape (B, len(odi), MAX_CHEBYSHEV_TERMS)."""
    y = _chebyshev_points(MAX_CHEBYSHEV_TERMS)
    cos_angle = np.sqrt((y + 1.0) / 2.0)
    kappa = kappa_from_odi(odi)[None, :, None]
    values = watson_stick_signal(kappa, betas[:, None, None], cos_angle[None, None, :])
    vandermonde = chebyshev.chebvander(y, MAX_CHEBYSHEV_TERMS - 1)
    return np.linalg.solve(vandermonde, values.reshape(-1, MAX_CHEBYSHEV_TERMS).T).T.reshape(
        values.shape
    )


def _with_derivative(function, odi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``function(odi)`` and its central-difference ODI-derivative (last axis ODI)."""
    step = _DERIVATIVE_STEP
    lower = np.clip(odi - step, ODI_MIN, 1.0)
    upper = np.clip(odi + step, ODI_MIN, 1.0)
    derivative = (function(upper) - function(lower)) / (upper - lower)
    return function(odi), derivative


def build_tables(
    bvals: np.ndarray, bvecs: np.ndarray, d_par: float = D_PAR, d_iso: float = D_ISO
) -> SignalTables:
    """Tabulate the exact compartments for an acquisition scheme.

    The tables depend on the scheme's distinct b-values only (the directions enter when they
    are evaluated) and are built once per set of b-values and diffusivities (cached): schemes
    with the same shells but other directions, as in network training, share them.

    Parameters
    ----------
    bvals : ndarray, shape (M,)
        b-values, s/mm^2.
    bvecs : ndarray, shape (M, 3)
        Unit gradient directions.
    d_par, d_iso : float
        Intra-neurite parallel and free-water diffusivities, mm^2/s.

    Returns
    -------
    SignalTables
    """
    bvals = np.asarray(bvals, dtype=np.float64)
    unique_b, shell_of_measurement = np.unique(bvals, return_inverse=True)
    compartments = _compartment_tables(tuple(unique_b.tolist()), float(d_par))
    return SignalTables(
        **compartments,
        shell_of_measurement=shell_of_measurement.astype(np.int64),
        bvals=bvals,
        bvecs=np.asarray(bvecs, dtype=np.float64),
        d_par=float(d_par),
        d_iso=float(d_iso),
    )


@lru_cache(maxsize=16)
def _compartment_tables(unique_b: tuple[float, ...], d_par: float) -> dict[str, np.ndarray]:
    """Tabulate the direction-independent part of :class:`SignalTables`, shared by schemes.

    Left writable (numba compiles read-only arrays as another type); nothing writes to them.
    """
    odi_nodes = np.linspace(ODI_MIN, 1.0, N_ODI_INTERVALS + 1)
    betas = np.asarray(unique_b) * d_par

    def coefficients(odi: np.ndarray) -> np.ndarray:
        return np.moveaxis(_stick_coefficients(odi, betas), 1, -1)

    coef, coef_dodi = _with_derivative(coefficients, odi_nodes)
    # Terms per b-value; the negligible ones are dropped before the change of basis, so that
    # their rounding noise is not amplified by the large power coefficients of high-order terms.
    significant = np.abs(coef).max(axis=2) > COEFFICIENT_CUTOFF
    terms = np.array([np.flatnonzero(row).max() + 1 for row in significant], dtype=np.int64)
    n_terms = int(terms.max())
    kept = np.arange(MAX_CHEBYSHEV_TERMS)[None, :, None] < terms[:, None, None]
    to_power = _chebyshev_to_power(n_terms)

    def power_series(chebyshev_coef: np.ndarray) -> np.ndarray:
        truncated = np.where(kept, chebyshev_coef, 0.0)[:, :n_terms]
        return padded(np.einsum("bkj,kl->bjl", truncated, to_power))

    mean_cos2, mean_cos2_dodi = _with_derivative(
        lambda odi: watson_mean_cos2(kappa_from_odi(odi)), odi_nodes
    )
    tables = {
        "odi_nodes": odi_nodes,
        "stick_coef": power_series(coef),
        "stick_coef_dodi": power_series(coef_dodi),
        "stick_terms": padded_terms(terms),
        "mean_cos2": mean_cos2,
        "mean_cos2_dodi": mean_cos2_dodi,
    }
    return tables
