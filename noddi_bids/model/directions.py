"""Gradient direction sets: well spread (electrostatic), perturbed, rotated.

The networks with rotation-invariant inputs are trained on signals sampled on many different
direction sets, as real data come with their own: another vendor's table, or every subject's
motion-corrected (rotated) b-vectors. These functions make such sets.

Why hand-written: DIPY's :func:`dipy.core.sphere.disperse_charges` minimises the same antipodal
electrostatic energy, but one point at a time in Python (6 s for 128 directions and 1,000
iterations here); training draws hundreds of sets, so the repulsion is vectorised over all
pairs instead.
"""

from __future__ import annotations

import numpy as np

#: Repulsion iterations that bring a random set to a well-spread one (energy within 1e-4).
SPREAD_ITERATIONS = 200


def random_unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `n` unit vectors uniformly on the sphere (normalised Gaussian vectors), shape (n, 3)."""
    vectors = rng.standard_normal((n, 3))
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-300)


def spread_directions(
    start: np.ndarray, iterations: int = SPREAD_ITERATIONS, step: float = 0.2
) -> np.ndarray:
    """Spread unit vectors by antipodally symmetric electrostatic repulsion.

    Minimises ``sum_{i<j} 1/|v_i - v_j| + 1/|v_i + v_j|`` (``v`` and ``-v`` are the same
    diffusion encoding) by normalised gradient steps on the sphere, the energy of DIPY's
    ``disperse_charges``.

    Parameters
    ----------
    start : ndarray, shape (n, 3)
        Starting unit vectors.
    iterations : int
        Gradient steps (0 returns `start` normalised).
    step : float
        Largest move of the first step, as a fraction of the mean nearest-neighbour spacing;
        it shrinks geometrically to 1 % of that by the last step.

    Returns
    -------
    ndarray, shape (n, 3)
        Unit vectors, sign made canonical (z >= 0).
    """
    vectors = np.array(start, dtype=np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    n = vectors.shape[0]
    spacing = np.sqrt(8 * np.pi / max(n, 1))  # mean spacing of n antipodal pairs
    moves = step * spacing * np.geomspace(1.0, 0.01, max(iterations, 1))
    for move in moves[:iterations]:
        # Force on v_i: sum_j (v_i - v_j) / |v_i - v_j|^3 + (v_i + v_j) / |v_i + v_j|^3, with
        # |v_i -+ v_j|^2 = 2 -+ 2 v_i.v_j: one Gram matrix instead of all pairwise differences.
        gram = np.clip(vectors @ vectors.T, -1.0 + 1e-12, 1.0 - 1e-12)
        np.fill_diagonal(gram, 0.0)
        minus, plus = 2.0 - 2.0 * gram, 2.0 + 2.0 * gram
        minus = 1.0 / (minus * np.sqrt(minus))
        plus = 1.0 / (plus * np.sqrt(plus))
        np.fill_diagonal(minus, 0.0)
        np.fill_diagonal(plus, 0.0)
        force = vectors * np.sum(minus + plus, axis=1, keepdims=True) - (minus - plus) @ vectors
        tangent = force - np.sum(force * vectors, axis=1, keepdims=True) * vectors
        length = np.linalg.norm(tangent, axis=1, keepdims=True)
        vectors += move * tangent / np.maximum(length.max(), 1e-300)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[vectors[:, 2] < 0] *= -1
    return vectors


def perturb_directions(
    vectors: np.ndarray, sigma_degrees: float, rng: np.random.Generator
) -> np.ndarray:
    """Tilt each unit vector by a random small rotation (as motion correction does per volume).

    Parameters
    ----------
    vectors : ndarray, shape (n, 3)
        Unit vectors.
    sigma_degrees : float
        Standard deviation of the tilt about each of two axes perpendicular to the vector,
        degrees.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, shape (n, 3)
        Unit vectors.
    """
    noise = rng.standard_normal(vectors.shape) * np.radians(sigma_degrees)
    noise -= np.sum(noise * vectors, axis=1, keepdims=True) * vectors
    moved = vectors + noise
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed rotation matrix (QR of a Gaussian matrix, sign-corrected), (3, 3)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def min_angle_degrees(vectors: np.ndarray) -> float:
    """Smallest angle between two distinct encodings of a set (antipodal), degrees."""
    dots = np.abs(vectors @ vectors.T)
    np.fill_diagonal(dots, 0.0)
    return float(np.degrees(np.arccos(np.clip(dots.max(), 0.0, 1.0))))
