"""The optimiser of one voxel in compiled (numba) code: Levenberg-Marquardt on the likelihood.

Minimises :func:`noddi_bids.fit.likelihood.objective` over the parameter vector of
:mod:`noddi_bids.fit.layout`, from a starting point (:func:`fit_from`); see
:func:`levenberg_marquardt` for the steps, the damping and when a run stops.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from noddi_bids.fit.layout import (
    N_PARAMS,
    SLOT_PHYSICAL,
    encode_fraction,
    physical,
)
from noddi_bids.fit.likelihood import objective
from noddi_bids.fit.polynomial import CONTRACT
from noddi_bids.model.noddi import ODI_MIN

# Marquardt damping range (relative to the curvature's diagonal).
_MIN_DAMPING = 1e-9
# Damping after a rejected nearly-undamped step (smaller values change the step too little to
# be worth another trial).
_FIRST_DAMPING = 1e-3
_MAX_DAMPING = 1e12
# A later start stops in the basin of an optimum found from an earlier start: when it comes this
# close to it (fractions, radians, relative s0), or when its Newton step lands this close while
# it is within _NEWTON_REACH times that distance.
SAME_OPTIMUM = 1e-2
_NEWTON_REACH = 5.0
# Largest per-iteration contraction assumed when extrapolating the remaining gain (see
# :func:`_remaining_gain`).
_MAX_CONTRACTION = 0.9
# A run whose Newton decrement is below this many tolerances checks the gain of its next step
# before paying for derivatives there: it is most likely the last.
_FINAL_STEP = 3.0


@njit(cache=True, fastmath=CONTRACT)
def _near_found(params, frame, found, scratch, distance):
    """Whether ``params`` lie within ``distance`` of a row of ``found`` (:func:`physical`).

    Fractions within ``distance``, s0 within that fraction of itself and orientations (either
    sign) within ``distance`` radians.
    """
    if found.shape[0] == 0:
        return False
    here = scratch[SLOT_PHYSICAL]
    physical(params, frame, here)
    for row in range(found.shape[0]):
        near = abs(here[3] - found[row, 3]) < distance * abs(found[row, 3])
        for k in range(3):
            near = near and abs(here[k] - found[row, k]) < distance
        alignment = abs(here[4] * found[row, 4] + here[5] * found[row, 5] + here[6] * found[row, 6])
        if near and alignment > np.cos(distance):
            return True
    return False


@njit(cache=True, fastmath=CONTRACT)
def _damped_step(hessian, gradient, damping, step, factor):
    """Solve ``(H + damping (diag(H) + floor)) step = -gradient`` by Cholesky.

    The small ``floor`` (relative to the largest diagonal entry) keeps parameters whose Jacobian
    column vanishes (a fraction at its bound) from making the system singular at any damping.
    Returns False if the matrix is not numerically positive definite.
    """
    n = gradient.shape[0]
    floor = 0.0
    for i in range(n):
        floor = max(floor, hessian[i, i])
    floor *= 1e-9
    for i in range(n):
        for j in range(i + 1):
            total = hessian[i, j] + (damping * (hessian[i, i] + floor) if i == j else 0.0)
            for k in range(j):
                total -= factor[i, k] * factor[j, k]
            if i == j:
                if total <= 0.0:
                    return False
                factor[i, i] = np.sqrt(total)
            else:
                factor[i, j] = total / factor[j, j]
    for i in range(n):
        total = -gradient[i]
        for k in range(i):
            total -= factor[i, k] * step[k]
        step[i] = total / factor[i, i]
    for i in range(n - 1, -1, -1):
        total = step[i]
        for k in range(i + 1, n):
            total -= factor[k, i] * step[k]
        step[i] = total / factor[i, i]
    return True


@njit(cache=True, fastmath=CONTRACT)
def _model_decrease(hessian, gradient, step):
    """Decrease ``-(g.s + s.H.s / 2)`` predicted by the undamped quadratic model."""
    total = 0.0
    for i in range(step.shape[0]):
        curvature = 0.0
        for j in range(step.shape[0]):
            curvature += hessian[i, j] * step[j]
        total -= step[i] * (gradient[i] + 0.5 * curvature)
    return total


@njit(cache=True, fastmath=CONTRACT)
def _remaining_gain(last, previous):
    """Gain still to come if the last two decreases continue geometrically.

    Where Gauss-Newton converges only linearly (its curvature misses the residuals' term, as
    in flat valleys), the Newton decrement underestimates the remaining gain; the observed
    contraction ``last / previous`` (at most ``_MAX_CONTRACTION``) does not. Zero before two
    steps.
    """
    if previous == np.inf:
        return 0.0
    contraction = min(last / previous, _MAX_CONTRACTION)
    return last * contraction / (1.0 - contraction)


@njit(cache=True, fastmath=CONTRACT)
def levenberg_marquardt(
    measured, sigma, params, frame, tables, max_iter, tolerance, scratch, found
):
    """Maximise the Rician likelihood of one voxel from ``params`` (updated in place).

    Newton-type steps with the exact Rician gradient and curvature (see :func:`objective`) and
    Marquardt damping; a step is kept only if it lowers the negative log-likelihood. The
    derivatives are computed together with the likelihood at each trial point, as nearly every
    trial is accepted. Converged means the quadratic model predicts less than ``tolerance`` of
    further decrease for an undamped step (the Newton decrement) and so do the last two
    decreases continued geometrically (:func:`_remaining_gain`), or no damped step lowers the
    NLL any more. (A small decrease of one step alone is no sign of convergence: in a curved
    valley a Newton step gains little far from the optimum.) A run whose Newton decrement is
    within ``_FINAL_STEP`` tolerances evaluates its next trial without derivatives, and stops
    there if that step gained as little and the extrapolated gain is below ``tolerance``. A
    run that comes within ``SAME_OPTIMUM`` of an optimum ``found`` by an earlier start (rows of
    :func:`physical` values), or whose Newton step lands that close from nearby, stops there:
    it is in that optimum's basin and would end at the same point.
    ``frame`` is the starting orientation with the two unit vectors of its chart
    (:func:`~noddi_bids.fit.layout.orientation_frame`). Returns (nll without the model-free
    constant, converged, iterations).
    """
    n = N_PARAMS
    inv_var = 1.0 / (sigma * sigma)
    gradient = np.empty(n)
    hessian = np.empty((n, n))
    trial_gradient = np.empty(n)
    trial_hessian = np.empty((n, n))
    factor = np.empty((n, n))
    step = np.empty(n)
    trial = np.empty(n)
    damping = _MIN_DAMPING
    last_decrease = np.inf
    previous_decrease = np.inf
    nll = objective(params, frame, measured, inv_var, tables, scratch, True, gradient, hessian)
    for iteration in range(max_iter):
        newton = _damped_step(hessian, gradient, _MIN_DAMPING, step, factor)
        predicted = np.inf
        if newton:
            predicted = 0.0
            for k in range(n):
                predicted -= 0.5 * gradient[k] * step[k]
            remaining = _remaining_gain(last_decrease, previous_decrease)
            if predicted < tolerance and remaining < tolerance:
                return nll, True, iteration
            if found.shape[0] > 0:
                for k in range(n):
                    trial[k] = params[k] + step[k]
                if _near_found(trial, frame, found, scratch, SAME_OPTIMUM) and _near_found(
                    params, frame, found, scratch, _NEWTON_REACH * SAME_OPTIMUM
                ):
                    return nll, True, iteration
        improved = False
        final_guess = newton and predicted < _FINAL_STEP * tolerance
        with_derivatives = not final_guess
        while damping < _MAX_DAMPING:
            solved = newton if damping == _MIN_DAMPING else False
            if solved or _damped_step(hessian, gradient, damping, step, factor):
                for k in range(n):
                    trial[k] = params[k] + step[k]
                trial_nll = objective(trial, frame, measured, inv_var, tables, scratch,
                                      with_derivatives, trial_gradient, trial_hessian)  # fmt: skip
                if trial_nll < nll:
                    improved = True
                    break
                with_derivatives = False
            damping = max(10.0 * damping, _FIRST_DAMPING)
        if not improved:
            return nll, True, iteration
        decrease = nll - trial_nll
        if (
            final_guess
            and decrease < _FINAL_STEP * tolerance
            and _remaining_gain(decrease, last_decrease) < tolerance
        ):
            params[:] = trial
            return trial_nll, True, iteration + 1
        if not with_derivatives:
            objective(trial, frame, measured, inv_var, tables, scratch, True, trial_gradient,
                      trial_hessian)  # fmt: skip
        previous_decrease = last_decrease
        last_decrease = decrease
        # Nielsen's update: relax the damping as far as the quadratic model predicted the
        # actual decrease well (gain ratio near 1), tighten it where it did not.
        gain_ratio = decrease / _model_decrease(hessian, gradient, step)
        damping = max(damping * max(1.0 / 3.0, 1.0 - (2.0 * gain_ratio - 1.0) ** 3), _MIN_DAMPING)
        nll = trial_nll
        params[:] = trial
        gradient[:] = trial_gradient
        hessian[:] = trial_hessian
        if _near_found(params, frame, found, scratch, SAME_OPTIMUM):
            return nll, True, iteration + 1
    return nll, False, max_iter


@njit(cache=True, fastmath=CONTRACT)
def fit_from(
    measured, sigma, odi, ndi, fwf, s0, frame, tables, max_iter, tolerance, scratch, found
):
    """One optimiser run from physical starting values; returns (params, nll, converged, its)."""
    params = np.empty(N_PARAMS)
    params[0] = encode_fraction(odi, ODI_MIN)
    params[1] = encode_fraction(ndi, 0.0)
    params[2] = encode_fraction(fwf, 0.0)
    params[3] = 0.0
    params[4] = 0.0
    params[5] = s0
    nll, converged, iterations = levenberg_marquardt(
        measured, sigma, params, frame, tables, max_iter, tolerance, scratch, found
    )
    return params, nll, converged, iterations
