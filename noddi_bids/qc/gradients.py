"""Gradient-table check: whether the b-vectors' axes are flipped or permuted against the data.

A flipped or permuted b-vector axis, a common error of converted data, leaves every signal
plausible and silently rotates each voxel's fibre orientation. It shows in the *spatial*
arrangement of the orientations: fibres run along the tissue, so an orientation field that is
right can be followed from voxel to voxel for long distances, and one whose axes are mixed up
runs out of the white matter or into voxels oriented otherwise after a few steps (Jeurissen et
al., Magn Reson Med 2014; MRtrix ``dwigradcheck``).

The check (:func:`check_gradient_table`):

1. fits a diffusion tensor (DIPY, ordinary least squares) to the volumes with
   b <= :data:`TENSOR_MAX_B` of the brain voxels: fractional anisotropy (FA) and principal
   eigenvector, in the frame of the b-vectors;
2. for each of the 24 axis permutations and flips that differ for axial orientations
   (:func:`candidate_transforms`; the 48 of ``dwigradcheck`` come in pairs that differ by a
   flip of all three axes, which changes no orientation), tracks from up to
   :data:`N_SEEDS` seeds (FA >= :data:`SEED_FA`) along the transformed eigenvectors, in both
   directions, with steps of :data:`STEP` voxel, until the FA drops below :data:`TRACK_FA`,
   the turn exceeds :data:`MAX_ANGLE` degrees or :data:`N_STEPS` steps are taken; the score
   is the mean number of steps;
3. compares the best transform with the table as given: when the best tracks
   :data:`ERROR_RATIO` times farther, the table is in error and the best transform is the
   correction; when no transform tracks :data:`STRUCTURE_RATIO` times farther than the worst,
   the orientations have no spatial structure to check against and the verdict is
   ``inconclusive`` (a phantom with a random orientation field, tiny data).

The b-vectors are taken in the image axes, as everywhere in noddi-bids (the frame of the
direction maps). Tensor orientations do not depend on a common rotation of the b-vectors and
data, so rotated tables (motion correction) are checked like any other.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from numba import njit

from noddi_bids.model.scheme import Scheme

#: Largest b-value (s/mm^2) of the volumes the tensor is fitted to (when enough remain).
TENSOR_MAX_B = 1500.0
#: FA of the seeds of the tracking.
SEED_FA = 0.3
#: FA below which a track stops.
TRACK_FA = 0.15
#: Largest turn between steps, degrees.
MAX_ANGLE = 45.0
#: Step length, voxels, and the most steps of a track in one direction.
STEP = 0.5
N_STEPS = 20
#: Seeds tracked (a random subset, fixed seed, when there are more).
N_SEEDS = 20_000
#: The table is in error when the best transform tracks this many times farther than it.
ERROR_RATIO = 1.10
#: Inconclusive unless the best transform tracks this many times farther than the worst.
STRUCTURE_RATIO = 1.25
#: Fewest seeds for a verdict.
MIN_SEEDS = 50
_AXES = "xyz"
_MIN_DIRECTIONS = 6


@dataclass(frozen=True)
class Transform:
    """A permutation and flip of the b-vector axes: ``new[i] = signs[i] * old[permutation[i]]``.

    Attributes
    ----------
    permutation : tuple of int
        Which old axis each new axis takes.
    signs : tuple of int
        +1 or -1 per new axis.
    """

    permutation: tuple[int, int, int]
    signs: tuple[int, int, int]

    @property
    def matrix(self) -> np.ndarray:
        """3 x 3 signed permutation matrix ``T``, ``new = T @ old``."""
        matrix = np.zeros((3, 3))
        for row, (column, sign) in enumerate(zip(self.permutation, self.signs, strict=True)):
            matrix[row, column] = sign
        return matrix

    @property
    def is_identity(self) -> bool:
        """Whether it leaves the b-vectors as they are."""
        return self.permutation == (0, 1, 2) and self.signs == (1, 1, 1)

    @property
    def name(self) -> str:
        """The new axes in terms of the old, e.g. ``(-x, y, z)`` or ``(y, x, z)``."""
        pairs = zip(self.permutation, self.signs, strict=True)
        parts = [("-" if sign < 0 else "") + _AXES[axis] for axis, sign in pairs]
        return "(" + ", ".join(parts) + ")"

    @property
    def words(self) -> str:
        """The transform in words, e.g. ``x flipped``, ``x and y swapped, z flipped``."""
        if self.is_identity:
            return "as given"
        parts = []
        moved = [axis for axis in range(3) if self.permutation[axis] != axis]
        if len(moved) == 2:
            parts.append(f"{_AXES[moved[0]]} and {_AXES[moved[1]]} swapped")
        elif len(moved) == 3:
            parts.append("axes permuted to " + "".join(_AXES[p] for p in self.permutation))
        flipped = [_AXES[axis] for axis in range(3) if self.signs[axis] < 0]
        if flipped:
            parts.append(" and ".join(flipped) + " flipped")
        return ", ".join(parts)

    def apply(self, scheme: Scheme) -> Scheme:
        """Return the scheme with its b-vectors transformed."""
        return Scheme(
            scheme.bvals,
            np.asarray(scheme.bvecs) @ self.matrix.T,
            b0_threshold=scheme.b0_threshold,
            shell_tolerance=scheme.shell_tolerance,
        )


def candidate_transforms() -> list[Transform]:
    """Return the 24 permutations and flips of the axes that differ for axial orientations.

    Of each pair that differs by a flip of all three axes, the one with at most one flipped
    axis; the identity first.
    """
    flips = ((1, 1, 1), (-1, 1, 1), (1, -1, 1), (1, 1, -1))
    return [
        Transform(tuple(permutation), signs)  # type: ignore[arg-type]
        for permutation in itertools.permutations(range(3))
        for signs in flips
    ]


@dataclass(frozen=True)
class GradientCheck:
    """Verdict of :func:`check_gradient_table`.

    Attributes
    ----------
    verdict : {"ok", "error", "inconclusive"}
        ``ok``: no transform tracks clearly farther than the table as given; ``error``: the
        ``correction`` does; ``inconclusive``: no spatial structure to check against.
    correction : Transform
        The best transform (the identity unless ``verdict`` is ``error``).
    ratio : float
        Score of the best transform over the score of the table as given.
    contrast : float
        Score of the best transform over the score of the worst.
    n_seeds : int
        Seeds tracked.
    scores : dict
        Mean track length (steps) of every candidate, by :attr:`Transform.name`.
    """

    verdict: str
    correction: Transform
    ratio: float
    contrast: float
    n_seeds: int
    scores: dict[str, float]

    def summary(self) -> str:
        """One line for logs and reports."""
        if self.verdict == "error":
            return (
                f"b-vectors inconsistent with the data: {self.correction.words}; the "
                f"corrected table {self.correction.name} tracks {self.ratio:.2f} times farther"
            )
        if self.verdict == "inconclusive":
            return (
                f"inconclusive: the fibre orientations have too little spatial structure "
                f"(best/worst track length {self.contrast:.2f}, {self.n_seeds} seeds)"
            )
        if self.ratio <= 1.0:
            return (
                "b-vectors consistent with the data (the table as given tracks farthest of the "
                f"24 axis permutations and flips; best/worst {self.contrast:.2f})"
            )
        return (
            f"b-vectors consistent with the data (no axis permutation or flip tracks "
            f"{ERROR_RATIO:g} times farther; the best {self.ratio:.2f})"
        )

    def to_dict(self) -> dict[str, object]:
        """Sidecar record (``GradientCheck``)."""
        return {
            "Verdict": self.verdict,
            "Correction": self.correction.name,
            "CorrectionWords": self.correction.words,
            "Summary": self.summary(),
            "TrackRatio": round(self.ratio, 4),
            "StructureContrast": round(self.contrast, 4),
            "Seeds": self.n_seeds,
            "Method": "tensor principal eigenvectors tracked for every axis permutation and flip "
            "(Jeurissen et al. 2014, MRtrix dwigradcheck)",
        }


def tensor_orientations(signals: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """FA and principal eigenvector of normalised signals (DIPY, ordinary least squares).

    Parameters
    ----------
    signals : ndarray, shape (N, M)
        Signals divided by their mean b = 0.
    scheme : Scheme
        Their scheme.

    Returns
    -------
    fa : ndarray, shape (N,)
    e1 : ndarray, shape (N, 3)
        Unit vectors in the frame of the b-vectors (0 where the fit failed).
    """
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel
    from threadpoolctl import threadpool_limits

    keep = np.asarray(scheme.bvals) <= TENSOR_MAX_B
    if np.count_nonzero(keep & ~scheme.b0_mask) < _MIN_DIRECTIONS:
        keep = np.ones_like(keep)
    table = gradient_table(
        scheme.bvals[keep], bvecs=scheme.bvecs[keep], b0_threshold=scheme.b0_threshold
    )
    with threadpool_limits(limits=1):
        fit = TensorModel(table, fit_method="OLS").fit(np.maximum(signals[:, keep], 1e-6))
    fa = np.nan_to_num(np.asarray(fit.fa, dtype=np.float64))
    e1 = np.nan_to_num(np.asarray(fit.evecs[..., 0], dtype=np.float64))
    return fa, e1


def check_gradient_table(
    signals: np.ndarray,
    mask: np.ndarray,
    scheme: Scheme,
    zooms: tuple[float, float, float],
    seed: int = 0,
) -> GradientCheck:
    """Check a gradient table against the data (see the module docstring).

    Parameters
    ----------
    signals : ndarray, shape (N, M)
        Normalised signals of the voxels of ``mask`` (C order).
    mask : ndarray of bool, shape (X, Y, Z)
        Brain mask.
    scheme : Scheme
        The table as given.
    zooms : tuple of float
        Voxel sizes, mm.
    seed : int
        Seed of the random choice of seeds when there are more than :data:`N_SEEDS`.

    Returns
    -------
    GradientCheck
    """
    mask = np.asarray(mask, dtype=bool)
    fa, e1 = tensor_orientations(signals, scheme)
    fa_volume = np.zeros(mask.shape)
    fa_volume[mask] = fa
    directions = np.zeros((*mask.shape, 3))
    directions[mask] = e1
    seeds = np.argwhere(fa_volume >= SEED_FA)
    if seeds.shape[0] > N_SEEDS:
        chosen = np.random.default_rng(seed).choice(seeds.shape[0], N_SEEDS, replace=False)
        seeds = seeds[np.sort(chosen)]
    transforms = candidate_transforms()
    scale = 1.0 / np.asarray(zooms, dtype=np.float64)
    scores = np.array(
        [
            _mean_track_length(
                directions,
                fa_volume,
                seeds,
                transform.matrix,
                scale,
                STEP,
                N_STEPS,
                TRACK_FA,
                np.cos(np.radians(MAX_ANGLE)),
            )  # fmt: skip
            if seeds.shape[0]
            else 0.0
            for transform in transforms
        ]
    )
    best = int(np.argmax(scores))
    given = scores[0]
    ratio = float(scores[best] / given) if given > 0 else np.inf
    contrast = float(scores[best] / scores.min()) if scores.min() > 0 else np.inf
    if seeds.shape[0] < MIN_SEEDS or contrast < STRUCTURE_RATIO:
        verdict, correction = "inconclusive", transforms[0]
    elif best != 0 and ratio >= ERROR_RATIO:
        verdict, correction = "error", transforms[best]
    else:
        verdict, correction = "ok", transforms[0]
    return GradientCheck(
        verdict=verdict,
        correction=correction,
        ratio=ratio if np.isfinite(ratio) else 0.0,
        contrast=contrast if np.isfinite(contrast) else 0.0,
        n_seeds=int(seeds.shape[0]),
        scores={t.name: float(s) for t, s in zip(transforms, scores, strict=True)},
    )


@njit(cache=True)
def _mean_track_length(directions, fa, seeds, matrix, scale, step, n_steps, min_fa, min_cos):
    """Mean number of steps of the tracks from ``seeds`` along ``matrix @ directions``.

    Directions are taken from the nearest voxel, transformed, converted to voxel units
    (``scale`` = 1 / voxel size) and normalised; a track stops outside the grid, below
    ``min_fa`` or when it turns by more than ``arccos(min_cos)``. Both directions from each seed
    count.
    """
    shape = fa.shape
    total = 0.0
    here = np.empty(3)
    for s in range(seeds.shape[0]):
        for sign in (1.0, -1.0):
            position = np.empty(3)
            for k in range(3):
                position[k] = seeds[s, k]
            _oriented(directions, matrix, scale, seeds[s, 0], seeds[s, 1], seeds[s, 2], here)
            current = here * sign
            for _ in range(n_steps):
                for k in range(3):
                    position[k] += step * current[k]
                i = int(np.floor(position[0] + 0.5))
                j = int(np.floor(position[1] + 0.5))
                m = int(np.floor(position[2] + 0.5))
                if i < 0 or j < 0 or m < 0 or i >= shape[0] or j >= shape[1] or m >= shape[2]:
                    break
                if fa[i, j, m] < min_fa:
                    break
                _oriented(directions, matrix, scale, i, j, m, here)
                cosine = here[0] * current[0] + here[1] * current[1] + here[2] * current[2]
                if abs(cosine) < min_cos:
                    break
                flip = 1.0 if cosine >= 0 else -1.0
                for k in range(3):
                    current[k] = flip * here[k]
                total += 1.0
    return total / (2.0 * seeds.shape[0])


@njit(cache=True)
def _oriented(directions, matrix, scale, i, j, m, out):
    """Write the unit vector of ``matrix @ directions[i, j, m]`` in voxel units to ``out``."""
    norm = 0.0
    for row in range(3):
        value = 0.0
        for column in range(3):
            value += matrix[row, column] * directions[i, j, m, column]
        out[row] = value * scale[row]
        norm += out[row] * out[row]
    norm = np.sqrt(norm) if norm > 0 else 1.0
    for row in range(3):
        out[row] /= norm
