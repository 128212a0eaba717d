"""Random acquisition schemes for training rotation-invariant networks.

Real direction sets differ from one another in three ways that change the statistics of the
rotation-invariant inputs (:mod:`noddi_bids.nn.features`): the number of directions per shell,
how evenly they are spread (the conditioning of the per-shell fit), and small per-volume tilts
left by motion correction. A global rotation changes nothing (the inputs are invariant; the
fibre orientations are drawn uniformly anyway), but is applied so that no two sets share an
axis. Each training scheme draws:

- per shell, a number of directions log-uniformly within the spec's range;
- a well-spread set (electrostatic repulsion to convergence) for half of the schemes, and for
  the other half a partly spread one (5-200 repulsion steps from random points), redrawn while
  its order-2 fit's condition number exceeds the spec's limit (so the fit orders chosen by
  :func:`noddi_bids.nn.features.fit_order` vary too);
- a per-volume tilt of standard deviation drawn uniformly in [0, ``max_tilt_degrees``];
- a number of b = 0 volumes uniformly within the spec's range.
"""

from __future__ import annotations

import numpy as np

from noddi_bids.model.directions import (
    SPREAD_ITERATIONS,
    perturb_directions,
    random_rotation,
    random_unit_vectors,
    spread_directions,
)
from noddi_bids.model.scheme import Scheme
from noddi_bids.nn.features import FeatureSpec, fit_order

#: Largest standard deviation of the per-volume tilt of training direction sets, degrees.
MAX_TILT_DEGREES = 3.0
#: Attempts at drawing a partly spread set within the condition limit before spreading it fully.
_ATTEMPTS = 20


def _log_uniform_int(low: int, high: int, rng: np.random.Generator) -> int:
    return int(np.clip(np.round(np.exp(rng.uniform(np.log(low), np.log(high + 0.5)))), low, high))


def random_shell_directions(
    n: int, max_condition: float, rng: np.random.Generator
) -> np.ndarray:
    """Directions of one training shell: well or partly spread, with a usable order-2 fit.

    Parameters
    ----------
    n : int
        Number of directions.
    max_condition : float
        Largest condition number of the order-2 fit accepted.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, shape (n, 3)
        Unit vectors.
    """
    if rng.random() < 0.5:
        return spread_directions(random_unit_vectors(n, rng))
    for _ in range(_ATTEMPTS):
        steps = int(rng.integers(5, SPREAD_ITERATIONS))
        directions = spread_directions(random_unit_vectors(n, rng), steps)
        if fit_order(directions, max_condition):
            return directions
    return spread_directions(random_unit_vectors(n, rng))


def random_scheme(
    spec: FeatureSpec, rng: np.random.Generator, max_tilt_degrees: float = MAX_TILT_DEGREES
) -> Scheme:
    """Draw an acquisition scheme with the shells of `spec` (see the module docstring).

    Parameters
    ----------
    spec : FeatureSpec
        Shells, orders and the ranges of directions and b = 0 volumes.
    rng : numpy.random.Generator
    max_tilt_degrees : float
        Largest standard deviation of the per-volume tilt, degrees.

    Returns
    -------
    Scheme
        b = 0 volumes first, then each shell; nominal b-values.
    """
    n_b0 = int(rng.integers(spec.b0_volumes[0], spec.b0_volumes[1] + 1))
    bvals, bvecs = [np.zeros(n_b0)], [np.zeros((n_b0, 3))]
    rotation = random_rotation(rng)
    tilt = rng.uniform(0.0, max_tilt_degrees)
    for b, (low, high) in zip(spec.shells, spec.directions, strict=True):
        n = _log_uniform_int(low, high, rng)
        for _ in range(_ATTEMPTS):
            directions = random_shell_directions(n, spec.max_condition, rng)
            directions = perturb_directions(directions @ rotation.T, tilt, rng)
            if fit_order(directions, spec.max_condition):
                break
        else:
            directions = spread_directions(random_unit_vectors(n, rng))
        bvals.append(np.full(n, b))
        bvecs.append(directions)
    return Scheme(np.concatenate(bvals), np.concatenate(bvecs))
