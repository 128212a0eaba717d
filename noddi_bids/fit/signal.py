"""The NODDI signal of one voxel in compiled (numba) code, from the exact signal tables.

The maths mirrors :mod:`noddi_bids.model.noddi`, evaluated through the tables of
:mod:`noddi_bids.fit.tables`: the stick's power series per b-value and the Watson mean of
``(mu.n)^2`` are interpolated in ODI (cubic Hermite), the hindered and free-water compartments
are closed-form. The public functions are what a caller needs to compute signals in a parallel
loop of its own (:mod:`noddi_bids.nn.synth` does):

* :func:`model_signal`: the signal of one voxel;
* :func:`~noddi_bids.fit.layout.scratch_arrays`: the work arrays it writes to (one set per
  thread);
* :func:`~noddi_bids.fit.threads.set_threads`: the threads of numba's parallel loops.

The other functions are the building blocks the likelihood and the grid search share.
"""

from __future__ import annotations

from numba import njit

from noddi_bids.fit.layout import (
    ROW_COS,
    ROW_COS2,
    ROW_HINDERED,
    ROW_MODEL,
    ROW_STICK,
    SLOT_COEF,
    SLOT_COEF_DODI,
    SLOT_WORK,
    TABLE_BVALS,
    TABLE_BVECS,
    TABLE_D_PAR,
    TABLE_ISO,
    TABLE_LEAD,
    TABLE_MEAN_COS2,
    TABLE_MEAN_COS2_DODI,
    TABLE_ODI_NODES,
    TABLE_RUNS,
    TABLE_STICK_COEF,
    TABLE_STICK_COEF_DODI,
    TABLE_TERMS,
    scratch_arrays,
)
from noddi_bids.fit.polynomial import CONTRACT, polynomial_value
from noddi_bids.fit.simd import exp, index
from noddi_bids.fit.threads import set_threads

__all__ = ["model_signal", "scratch_arrays", "set_threads"]


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _hermite(nodes, position):
    """Cell index, Hermite basis weights and their derivatives at ``position`` on ``nodes``."""
    n_cells = nodes.shape[0] - 1
    step = (nodes[-1] - nodes[0]) / n_cells
    t = (position - nodes[0]) / step
    cell = min(max(int(t), 0), n_cells - 1)
    t -= cell
    t2 = t * t
    t3 = t2 * t
    weights = (2 * t3 - 3 * t2 + 1, (t3 - 2 * t2 + t) * step, -2 * t3 + 3 * t2, (t3 - t2) * step)
    slopes = (
        (6 * t2 - 6 * t) / step,
        3 * t2 - 4 * t + 1,
        (-6 * t2 + 6 * t) / step,
        3 * t2 - 2 * t,
    )
    return cell, weights, slopes


@njit(cache=True, inline="always", fastmath=CONTRACT)
def _interpolate(values, derivatives, cell, weights, slopes):
    """Cubic Hermite value and derivative of a tabulated 1-D function."""
    v0, v1 = values[cell], values[cell + 1]
    d0, d1 = derivatives[cell], derivatives[cell + 1]
    value = weights[0] * v0 + weights[1] * d0 + weights[2] * v1 + weights[3] * d1
    slope = slopes[0] * v0 + slopes[1] * d0 + slopes[2] * v1 + slopes[3] * d1
    return value, slope


@njit(cache=True, inline="always", fastmath=CONTRACT)
def hindered_diffusivities(ndi, e_cos2, d_par):
    """Watson-averaged hindered tensor: perpendicular diffusivity and (parallel - perpendicular).

    Mirrors :func:`noddi_bids.model.noddi.hindered_signal` with ``d_perp = d_par (1 - ndi)`` and
    ``e_cos2`` the Watson mean of ``(mu.n)^2``.
    """
    d_perp_w = d_par * (1.0 - ndi) + d_par * ndi * (1.0 - e_cos2) / 2.0
    return d_perp_w, d_par * ndi * (3.0 * e_cos2 - 1.0) / 2.0


@njit(cache=True, fastmath=CONTRACT)
def odi_tables(odi, tables, out, out_dodi):
    """Interpolate the tables at ``odi`` (one set of Hermite weights for all of them).

    Writes the stick's power-series coefficients for every b-value to ``out`` and their
    ODI-derivatives to ``out_dodi``; returns the Watson mean of ``(mu.n)^2`` and its
    ODI-derivative.
    """
    odi_nodes, coef = tables[TABLE_ODI_NODES], tables[TABLE_STICK_COEF]
    coef_dodi = tables[TABLE_STICK_COEF_DODI]
    mean_cos2, mean_cos2_dodi = tables[TABLE_MEAN_COS2], tables[TABLE_MEAN_COS2_DODI]
    cell, weights, slopes = _hermite(odi_nodes, odi)
    for shell in range(coef.shape[0]):
        for k in range(coef.shape[2]):
            value, slope = _interpolate(
                coef[shell, :, k], coef_dodi[shell, :, k], cell, weights, slopes
            )
            out[shell, k] = value
            out_dodi[shell, k] = slope
    return _interpolate(mean_cos2, mean_cos2_dodi, cell, weights, slopes)


@njit(cache=True, inline="always", fastmath=CONTRACT)
def slope_coefficients(coefficients, out):
    """Power-series coefficients of the x-derivative of each row of ``coefficients``."""
    for shell in range(coefficients.shape[0]):
        for k in range(coefficients.shape[1] - 1):
            out[shell, k] = (k + 1) * coefficients[shell, k + 1]
        out[shell, coefficients.shape[1] - 1] = 0.0


@njit(cache=True, inline="always", fastmath=CONTRACT)
def hindered_attenuation(bval, x, d_perp_w, anisotropy):
    """Hindered compartment's attenuation at ``x = (g.mu)^2`` (:func:`hindered_diffusivities`)."""
    return exp(-bval * (d_perp_w + anisotropy * x))


@njit(cache=True, inline="always", fastmath=CONTRACT)
def tissue_signal(ndi, stick, hindered):
    """Attenuation of the tissue (intra- and extra-neurite) part of the signal."""
    return ndi * stick + (1.0 - ndi) * hindered


@njit(cache=True, inline="always", fastmath=CONTRACT)
def unit_signal(fwf, tissue, free_water):
    """Signal relative to s0 from the tissue and free-water attenuations."""
    return (1.0 - fwf) * tissue + fwf * free_water


@njit(cache=True, inline="always", fastmath=CONTRACT)
def squared_cosines(mu, tables, work, first):
    """``g.mu`` and ``(g.mu)^2`` of the measurements from ``first`` on, to two work rows."""
    bvecs = tables[TABLE_BVECS]
    mu_x, mu_y, mu_z = mu[0], mu[1], mu[2]
    for m in range(index(first), index(bvecs.shape[1])):
        c = bvecs[0, m] * mu_x + bvecs[1, m] * mu_y + bvecs[2, m] * mu_z
        work[ROW_COS, m] = c
        work[ROW_COS2, m] = c * c


@njit(cache=True, inline="always", fastmath=CONTRACT)
def series_by_run(table, tables, work, x_row, out_row, first):
    """Write the series in ``table`` at ``x`` (row ``x_row`` of ``work``) to row ``out_row``.

    Over the measurements from ``first`` on, one run of a b-value at a time
    (:attr:`~noddi_bids.fit.tables.SignalTables.runs`), so that the series (row of ``table``)
    and its length stay fixed inside the loop.
    """
    runs, terms = tables[TABLE_RUNS], tables[TABLE_TERMS]
    for run in range(runs.shape[0]):
        k = runs[run, 2]
        n_terms = terms[k]
        for m in range(max(runs[run, 0], first), runs[run, 1]):
            work[out_row, m] = polynomial_value(table, k, n_terms, work[x_row, m])


@njit(cache=True, inline="always", fastmath=CONTRACT)
def signal_rows(ndi, fwf, mu, s0, e_cos2, tables, coef_buf, work):
    """Compartment attenuations and model signal of one voxel in the rows of ``work``.

    Rows ``ROW_COS``, ``ROW_COS2``, ``ROW_STICK``, ``ROW_HINDERED`` from the first measurement
    with b > 0 on, ``ROW_MODEL`` for all. Written as separate passes over the measurements, each
    of which LLVM vectorises (all but the stick series, whose length varies with the b-value).
    """
    bvals, d_par = tables[TABLE_BVALS], tables[TABLE_D_PAR]
    iso, lead = tables[TABLE_ISO], tables[TABLE_LEAD]
    n_meas = index(bvals.shape[0])
    d_perp_w, anisotropy = hindered_diffusivities(ndi, e_cos2, d_par)
    squared_cosines(mu, tables, work, lead)
    series_by_run(coef_buf, tables, work, ROW_COS2, ROW_STICK, lead)
    for m in range(index(0), index(lead)):
        work[ROW_MODEL, m] = s0
    for m in range(index(lead), n_meas):
        hindered = hindered_attenuation(bvals[m], work[ROW_COS2, m], d_perp_w, anisotropy)
        work[ROW_HINDERED, m] = hindered
        tissue = tissue_signal(ndi, work[ROW_STICK, m], hindered)
        work[ROW_MODEL, m] = s0 * unit_signal(fwf, tissue, iso[m])
    return d_perp_w, anisotropy


@njit(cache=True, fastmath=CONTRACT)
def model_signal(odi, ndi, fwf, mu, s0, tables, scratch, out):
    """Signal of one voxel for all measurements (no derivatives), written to ``out``.

    ``scratch`` holds the work arrays of :func:`~noddi_bids.fit.layout.scratch_arrays`.
    """
    coef_buf, coef_dodi_buf, work = scratch[SLOT_COEF], scratch[SLOT_COEF_DODI], scratch[SLOT_WORK]
    e_cos2, _ = odi_tables(odi, tables, coef_buf, coef_dodi_buf)
    signal_rows(ndi, fwf, mu, s0, e_cos2, tables, coef_buf, work)
    out[:] = work[ROW_MODEL]
