"""Layout of one voxel's data in the fitter's compiled kernels, and its parameter vector.

Parameter vector of one voxel (``N_PARAMS`` = 6)::

    [u_odi, u_ndi, u_fwf, a, b, s0]

with ``odi = ODI_MIN + (1 - ODI_MIN) sin^2(u_odi)``, ``ndi = sin^2(u_ndi)``,
``fwf = sin^2(u_fwf)`` (bounded without constraints, as in the NODDI toolbox), the orientation
``mu = normalise(mu0 + a e1 + b e2)`` in a chart around the starting direction ``mu0``, and the
b = 0 signal ``s0``.

The kernels take the signal tables as one tuple (:meth:`~noddi_bids.fit.tables.SignalTables.packed`,
positions ``TABLE_*``) and keep each voxel's work arrays in another (:func:`scratch_arrays`,
positions ``SLOT_*``; the per-measurement work array has the rows ``ROW_*``). numba indexes
such tuples only with constants, hence the named positions.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from noddi_bids.fit.polynomial import CONTRACT
from noddi_bids.fit.tables import PACKED
from noddi_bids.model.noddi import ODI_MIN

N_PARAMS = 6
# Values of :func:`physical`: odi, ndi, fwf, s0 and the unit orientation.
N_PHYSICAL = 7
# Positions in the packed tables (:meth:`noddi_bids.fit.tables.SignalTables.packed`).
(TABLE_ODI_NODES, TABLE_STICK_COEF, TABLE_STICK_COEF_DODI, TABLE_MEAN_COS2, TABLE_MEAN_COS2_DODI,
 TABLE_RUNS, TABLE_BVALS, TABLE_BVECS, TABLE_D_PAR, TABLE_ISO, TABLE_TERMS, TABLE_LEAD) = (
    PACKED.index(name) for name in (
        "odi_nodes", "stick_coef", "stick_coef_dodi", "mean_cos2", "mean_cos2_dodi", "runs",
        "bvals", "bvecs_by_axis", "d_par", "iso_signal", "stick_terms", "leading_b0"))  # fmt: skip
# Slots of the scratch arrays (:func:`scratch_arrays`): the stick's series coefficients per
# b-value and their ODI-derivatives, the transposed Jacobian with the likelihood's gradient and
# curvature weights as its last two rows, the per-measurement work rows (``ROW_*``), a trial
# signal, the coefficients of the stick's x-derivative, the orientation and its two
# derivatives, a buffer of :func:`physical` values and the voxel's measurements.
(SLOT_COEF, SLOT_COEF_DODI, SLOT_JACOBIAN, SLOT_WORK, SLOT_SIGNAL, SLOT_COEF_DX, SLOT_ORIENTATION,
 SLOT_PHYSICAL, SLOT_MEASURED) = range(9)  # fmt: skip
# Rows of the per-measurement work array: g.mu and its square, stick and hindered attenuations,
# model signal, the stick's x- and ODI-derivatives, likelihood terms, the grid's tissue signal.
(ROW_COS, ROW_COS2, ROW_STICK, ROW_HINDERED, ROW_MODEL, ROW_STICK_DX, ROW_STICK_DODI,
 ROW_NLL_TERMS, ROW_TISSUE) = range(9)  # fmt: skip
# Starting fractions are kept this far inside [0, 1]: at sin^2(u) = 0 or 1 the gradient vanishes.
_EDGE = 1e-3


@njit(cache=True, fastmath=CONTRACT)
def orientation_frame(mu0):
    """Two unit vectors completing ``mu0`` to an orthonormal basis."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(mu0[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = helper - mu0 * (helper @ mu0)
    e1 /= np.sqrt(e1 @ e1)
    e2 = np.cross(mu0, e1)
    return e1, e2


@njit(cache=True, fastmath=CONTRACT)
def decode(params, frame, mu):
    """Physical (odi, ndi, fwf, s0) of the unconstrained vector; writes the orientation to ``mu``.

    Also returns the length of the chart vector ``mu0 + a e1 + b e2`` (for derivatives).
    Written without array temporaries: it runs at every evaluation of the likelihood.
    """
    mu0, e1, e2 = frame
    for k in range(3):
        mu[k] = mu0[k] + params[3] * e1[k] + params[4] * e2[k]
    norm = np.sqrt(mu[0] * mu[0] + mu[1] * mu[1] + mu[2] * mu[2])
    for k in range(3):
        mu[k] /= norm
    odi = ODI_MIN + (1.0 - ODI_MIN) * np.sin(params[0]) ** 2
    return odi, np.sin(params[1]) ** 2, np.sin(params[2]) ** 2, params[5], norm


@njit(cache=True, fastmath=CONTRACT)
def physical(params, frame, out):
    """Write (odi, ndi, fwf, s0, mu_x, mu_y, mu_z) of the unconstrained vector to ``out``."""
    out[0], out[1], out[2], out[3], _ = decode(params, frame, out[4:])


@njit(cache=True, fastmath=CONTRACT)
def encode_fraction(value, low):
    """Inverse of ``low + (1 - low) sin^2(u)`` (value clipped into the range)."""
    ratio = min(max((value - low) / (1.0 - low), _EDGE), 1.0 - _EDGE)
    return np.arcsin(np.sqrt(ratio))


@njit(cache=True, fastmath=CONTRACT)
def scratch_arrays(tables):
    """Work arrays of one voxel, in the order of the ``SLOT_*`` positions (see there)."""
    coef, bvals, lead = tables[TABLE_STICK_COEF], tables[TABLE_BVALS], tables[TABLE_LEAD]
    n_meas = bvals.shape[0]
    jac = np.empty((N_PARAMS + 2, n_meas))
    # The Jacobian columns of the leading b = 0 measurements (signal s0), which
    # :func:`noddi_bids.fit.likelihood.objective` does not write.
    jac[: N_PARAMS - 1, :lead] = 0.0
    jac[N_PARAMS - 1, :lead] = 1.0
    return (  # in SLOT_* order
        np.empty((coef.shape[0], coef.shape[2])),
        np.empty((coef.shape[0], coef.shape[2])),
        jac,
        np.empty((ROW_TISSUE + 1, n_meas)),
        np.empty(n_meas),
        np.empty((coef.shape[0], coef.shape[2])),
        np.empty((3, 3)),
        np.empty(N_PHYSICAL),
        np.empty(n_meas),
    )
