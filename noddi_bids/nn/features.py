"""Rotation-invariant network inputs: per-shell spherical-harmonic band norms and noise level.

NODDI's ODI, NDI and FWF do not depend on the fibre direction, and on each shell the
Watson-NODDI signal is axially symmetric about it. Fitting each shell's signal (normalised by
the mean b = 0) with real, even, orthonormal spherical harmonics (DIPY's basis) gives
coefficients ``c_lm``; the norm of each order ``||c_l|| = sqrt(sum_m c_lm^2)`` does not change
when the fibre, or the gradient table, is rotated. The network inputs are, per shell,

- ``l0``: ``c_00 / sqrt(4 pi)``, the fitted mean signal (powder average);
- ``l2``: ``||c_2|| / sqrt(4 pi)``, the signal's anisotropy;

and, so that the network knows how noisy these are,

- ``log_sigma``: the log of the voxel's noise level relative to its mean b = 0, pooled from the
  b = 0 repeats and the residuals of the shells' fits (works with a single b = 0 volume), not
  below :data:`SIGMA_FLOOR`;
- ``log_gain`` per shell and order: the log of the factor by which the direction set turns that
  noise into noise of the feature (the root sum of squares of the pseudo-inverse rows of the
  order in the shell's order-2 fit, over ``sqrt(4 pi)``). It carries the number of directions
  and how evenly they are spread, which differ between tables. It is taken from the order-2
  fit, whatever the order of the fit the features come from: for well-spread sets the two agree
  (0.204 against 0.204 for the reference table's b = 700 shell), and the order-2 value moves 5
  times less when each direction is tilted by a few degrees (0.6 % against 3 %), so networks
  do not respond to such tilts.

**The fit order rule.** Each shell is fitted up to the highest order ``L`` in 6, 4, 2 for which
it has at least 1.5 times as many directions as coefficients (``n >= 42`` for order 6, ``23``
for order 4; order 2 needs only its 6 coefficients) and the fit's condition number is at most
:data:`MAX_CONDITION`
(well-spread sets have 1.0-1.1; a set confined to a cone or a plane is refused). The orders above
2 are fitted only so that the signal's finer angular structure (strong at low ODI and high b) is
not aliased into the orders 0 and 2 that the network reads, which then agree between direction
sets, and so that the fit residuals measure noise rather than that structure. Orders 4 and 6
as inputs added nothing in a feasibility study at SNR 15, and are far worse conditioned on sets
that are not optimised.

The fibre direction (:func:`fibre_direction`) comes from fits of the same kind: the order <= 2
part of a shell's signal is a quadratic form ``g^T A g`` whose eigenvector of the smallest
eigenvalue (least signal) is the mean fibre direction for an axially symmetric signal.

Nothing here imports torch: this is the inference path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from dipy.reconst.shm import real_sh_descoteaux_from_index, sph_harm_ind_list
from scipy.linalg import block_diag

from noddi_bids.model.scheme import Scheme

#: Orders of the spherical-harmonic fits tried, highest first (see the fit order rule).
FIT_ORDERS = (6, 4, 2)
#: Orders whose band norms are network inputs.
FEATURE_ORDERS = (0, 2)
#: Directions per coefficient a shell needs for a fit above order 2.
DIRECTIONS_PER_COEFFICIENT = 1.5
#: Fewest directions of a shell (the coefficients of orders 0 and 2).
MIN_DIRECTIONS = 6
#: Largest condition number of a shell's least-squares fit that a network accepts.
MAX_CONDITION = 2.0
#: Largest relative difference between a data shell's b-value and a network's shell.
SHELL_B_TOLERANCE = 0.05
#: Lowest noise level given to a network (relative to b = 0): half that of the highest SNR
#: trained on (80). Cleaner data (averaged, simulated) are presented as this clean, instead of
#: as a noise level the network never saw.
SIGMA_FLOOR = 1.0 / 160.0
_SQRT_4PI = np.sqrt(4 * np.pi)


class FeatureError(ValueError):
    """A scheme whose shells or direction sets a rotation-invariant network cannot use."""


def n_coefficients(l_max: int) -> int:
    """Count the even real spherical harmonics up to order `l_max`: (l+1)(l+2)/2."""
    return (l_max + 1) * (l_max + 2) // 2


def _band(order: int) -> tuple[int, int]:
    """Columns (start, stop) of the coefficients of one even order in DIPY's ordering."""
    return (n_coefficients(order - 2) if order else 0), n_coefficients(order)


def sh_basis(directions: np.ndarray, l_max: int) -> np.ndarray:
    """Real, even, orthonormal spherical harmonics (DIPY's ``descoteaux07``, non-legacy).

    Parameters
    ----------
    directions : ndarray, shape (n, 3)
        Unit vectors.
    l_max : int
        Even maximum order.

    Returns
    -------
    ndarray, shape (n, (l_max+1)(l_max+2)/2)
        Basis values, columns ordered by order then degree (DIPY's order).
    """
    m_values, l_values = sph_harm_ind_list(l_max)
    theta = np.arccos(np.clip(directions[:, 2], -1.0, 1.0))
    phi = np.arctan2(directions[:, 1], directions[:, 0])
    return real_sh_descoteaux_from_index(
        m_values, l_values, theta[:, None], phi[:, None], legacy=False
    )


def _quadratic_basis(directions: np.ndarray) -> np.ndarray:
    """Monomials of ``g^T A g`` for symmetric A: x^2, y^2, z^2, 2xy, 2xz, 2yz, shape (n, 6)."""
    x, y, z = directions.T
    return np.column_stack([x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z])


@dataclass(frozen=True)
class FeatureSpec:
    """What a rotation-invariant network was trained on (stored in its metadata).

    Attributes
    ----------
    shells : tuple of float
        Nominal b-values of the diffusion-weighted shells, s/mm^2, ascending.
    directions : tuple of (int, int)
        Range of the number of directions per shell the network was trained on.
    b0_volumes : (int, int)
        Range of the number of b = 0 volumes trained on (not a limit: more b = 0 volumes only
        make the normalisation and the noise estimate more precise).
    max_condition : float
        Largest condition number of a shell's fit trained on (and accepted).
    b_tolerance : float
        Largest relative difference between a data shell and a network shell.
    """

    shells: tuple[float, ...]
    directions: tuple[tuple[int, int], ...] = ()
    b0_volumes: tuple[int, int] = (1, 16)
    max_condition: float = MAX_CONDITION
    b_tolerance: float = SHELL_B_TOLERANCE

    def __post_init__(self) -> None:
        shells = tuple(float(b) for b in self.shells)
        if not shells or list(shells) != sorted(set(shells)) or shells[0] <= 0:
            raise ValueError(f"shells must be distinct positive b-values, got {self.shells}")
        object.__setattr__(self, "shells", shells)
        directions = tuple((int(a), int(b)) for a, b in self.directions) or (
            (MIN_DIRECTIONS, 160),
        ) * len(shells)
        if len(directions) != len(shells):
            raise ValueError("directions needs one (low, high) range per shell")
        for low, high in directions:
            if not MIN_DIRECTIONS <= low <= high:
                raise ValueError(
                    f"direction ranges need {MIN_DIRECTIONS} <= low <= high, got ({low}, {high})"
                )
        object.__setattr__(self, "directions", directions)
        object.__setattr__(self, "b0_volumes", tuple(int(v) for v in self.b0_volumes))

    # -- layout -------------------------------------------------------------------------
    @property
    def bands(self) -> tuple[tuple[int, int], ...]:
        """(shell index, order) of every band feature, in input order."""
        return tuple((s, order) for s in range(len(self.shells)) for order in FEATURE_ORDERS)

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the network inputs, in order."""
        bands = [f"b{self.shells[s]:g}_l{order}" for s, order in self.bands]
        gains = [f"b{self.shells[s]:g}_l{order}_log_gain" for s, order in self.bands]
        return (*bands, "log_sigma", *gains)

    @property
    def n_features(self) -> int:
        """Number of network inputs."""
        return 2 * len(self.bands) + 1

    @property
    def key(self) -> str:
        """Short name of the shells, e.g. ``b700-2000``."""
        return "b" + "-".join(f"{b:g}" for b in self.shells)

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able description."""
        return {
            "shells": list(self.shells),
            "directions": [list(r) for r in self.directions],
            "b0_volumes": list(self.b0_volumes),
            "max_condition": self.max_condition,
            "b_tolerance": self.b_tolerance,
            "fit_orders": list(FIT_ORDERS),
            "directions_per_coefficient": DIRECTIONS_PER_COEFFICIENT,
            "inputs": list(self.names),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`to_dict` (``inputs`` and the fit order rule are derived)."""
        return cls(
            shells=tuple(data["shells"]),
            directions=tuple(tuple(r) for r in data["directions"]),
            b0_volumes=tuple(data["b0_volumes"]),
            max_condition=float(data["max_condition"]),
            b_tolerance=float(data["b_tolerance"]),
        )

    @classmethod
    def for_scheme(cls, scheme: Scheme, **kwargs: Any) -> FeatureSpec:
        """Spec with the shells of `scheme` and default ranges (see :class:`FeatureSpec`)."""
        return cls(shells=tuple(float(b) for b in scheme.shells), **kwargs)

    # -- applicability -------------------------------------------------------------------
    def check(self, scheme: Scheme) -> None:
        """Raise :class:`FeatureError` naming why `scheme` cannot be used, if it cannot.

        The data's shells must be the spec's shells (each within :attr:`b_tolerance`), each
        with a number of directions within the trained range and a well-conditioned fit of
        order 2 at least; the noise level must be estimable (two b = 0 volumes, or a shell with
        more directions than coefficients).
        """
        design(scheme, self)


def fit_order(directions: np.ndarray, max_condition: float = MAX_CONDITION) -> int:
    """Order of a shell's fit by the fit order rule (module docstring).

    Parameters
    ----------
    directions : ndarray, shape (n, 3)
        The shell's unit directions.
    max_condition : float
        Largest condition number accepted.

    Returns
    -------
    int
        6, 4 or 2; 0 when not even an order-2 fit is possible (too few directions, or a set
        that does not cover the sphere).
    """
    n = directions.shape[0]
    for order in FIT_ORDERS:
        needed = n_coefficients(order) * (DIRECTIONS_PER_COEFFICIENT if order > 2 else 1)
        if n >= needed and np.linalg.cond(sh_basis(directions, order)) <= max_condition:
            return order
    return 0


@dataclass(frozen=True)
class ShellDesign:
    """Least-squares fits of one scheme's shells for a :class:`FeatureSpec`.

    Build with :func:`design`; then :meth:`features` and :meth:`noise_sigma` take signals
    normalised by their mean b = 0, volumes in the scheme's order. All shells are fitted by one
    matrix product (their pseudo-inverses side by side), and the residual sums of squares come
    from the coefficients (``|y|^2 - c^T B^T B c`` for a least-squares fit), in float32.

    Attributes
    ----------
    spec : FeatureSpec
    projection : ndarray of float32, shape (M, K)
        Every shell's least-squares pseudo-inverse (transposed), zero on other volumes: the
        signals times it are all shells' SH coefficients, shell after shell.
    gram : ndarray of float32, shape (K, K)
        Block-diagonal ``B^T B`` of the shells' bases.
    shell_weights, b0_weights : ndarray of float32, shape (M,)
        Indicators of the diffusion-weighted and of the b = 0 volumes.
    band_columns : tuple of (int, int)
        Coefficient columns (start, stop) of every band feature, in ``spec.bands`` order.
    residual_dof : int
        Degrees of freedom of the pooled noise estimate.
    conditions : ndarray, shape (S,)
        Condition number of each shell's fit.
    gains : ndarray, shape (F_bands,)
        Noise gain of every band feature.
    orders : tuple of int
        Order of each shell's fit (the fit order rule).
    """

    spec: FeatureSpec
    projection: np.ndarray
    gram: np.ndarray
    shell_weights: np.ndarray
    b0_weights: np.ndarray
    band_columns: tuple[tuple[int, int], ...]
    residual_dof: int
    conditions: np.ndarray
    gains: np.ndarray
    orders: tuple[int, ...]

    def _fit(self, signals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SH coefficients (N, K) and noise level (N,) of normalised signals."""
        signals = np.asarray(signals, dtype=np.float32)
        coefficients = signals @ self.projection
        squares = (signals * signals) @ (self.shell_weights + self.b0_weights)
        squares -= np.einsum("ij,ij->i", coefficients @ self.gram, coefficients)
        n_b0 = float(self.b0_weights.sum())
        squares -= (signals @ self.b0_weights) ** 2 / n_b0
        return coefficients, np.sqrt(np.maximum(squares, 0.0) / self.residual_dof)

    def noise_sigma(self, signals: np.ndarray) -> np.ndarray:
        """Pooled noise level of normalised signals (b = 0 repeats and shell residuals), (N,)."""
        return self._fit(signals)[1]

    def features(self, signals: np.ndarray) -> np.ndarray:
        """Network inputs of normalised signals.

        Parameters
        ----------
        signals : ndarray, shape (N, M)
            Signals divided by their mean b = 0, volumes in the scheme's order.

        Returns
        -------
        ndarray of float32, shape (N, spec.n_features)
            Columns in ``spec.names`` order.
        """
        coefficients, sigma = self._fit(signals)
        out = np.empty((coefficients.shape[0], self.spec.n_features), dtype=np.float32)
        n_bands = len(self.band_columns)
        for column, (start, stop) in enumerate(self.band_columns):
            band = coefficients[:, start:stop]
            out[:, column] = np.sqrt(np.einsum("ij,ij->i", band, band)) / _SQRT_4PI
        out[:, n_bands] = np.log(np.maximum(sigma, SIGMA_FLOOR))
        out[:, n_bands + 1 :] = np.log(self.gains)
        return out


def design(scheme: Scheme, spec: FeatureSpec) -> ShellDesign:
    """Build the per-shell fits of `scheme` for `spec`, checking that they apply.

    Parameters
    ----------
    scheme : Scheme
        The data's scheme (any volume order, any number of b = 0 volumes).
    spec : FeatureSpec
        The network's shells and trained ranges.

    Returns
    -------
    ShellDesign

    Raises
    ------
    FeatureError
        Naming the shell and what is wrong: other shells, too few or too many directions, a
        badly conditioned (e.g. one-sided) direction set, or no way to estimate the noise.
    """
    shells = scheme.shells
    wanted = ", ".join(f"{b:g}" for b in spec.shells)
    have = ", ".join(f"{b:g}" for b in shells) or "none"
    if shells.size != len(spec.shells) or not np.all(
        np.abs(shells - np.asarray(spec.shells)) <= spec.b_tolerance * np.asarray(spec.shells)
    ):
        raise FeatureError(
            f"the data's shells (b = {have} s/mm^2) are not the network's shells "
            f"(b = {wanted}, each within {100 * spec.b_tolerance:g} %)"
        )
    blocks, grams, band_columns, conditions, gains, orders = [], [], [], [], [], []
    shell_weights = np.zeros(scheme.n_measurements)
    residual_dof = max(scheme.n_b0 - 1, 0)
    for s, (b, (low, high)) in enumerate(zip(spec.shells, spec.directions, strict=True)):
        index = np.flatnonzero(scheme.shell_index == s)
        if not low <= index.size <= high:
            raise FeatureError(
                f"shell b = {b:g} has {index.size} directions; the network was trained on "
                f"{low}-{high}"
            )
        order = fit_order(scheme.bvecs[index], spec.max_condition)
        if not order:
            condition = np.linalg.cond(sh_basis(scheme.bvecs[index], 2))
            raise FeatureError(
                f"the {index.size} directions of shell b = {b:g} are not spread over the "
                f"sphere (condition number {condition:.3g} of the order-2 fit, at most "
                f"{spec.max_condition:g}): they cover only part of it, e.g. a cone or a plane"
            )
        basis = sh_basis(scheme.bvecs[index], order)
        condition = float(np.linalg.cond(basis))
        pinv = np.linalg.pinv(basis)
        block = np.zeros((scheme.n_measurements, pinv.shape[0]))
        block[index] = pinv.T
        offset = sum(g.shape[0] for g in grams)
        orders.append(order)
        low_order = np.linalg.pinv(sh_basis(scheme.bvecs[index], 2))
        for feature_order in FEATURE_ORDERS:
            start, stop = _band(feature_order)
            band_columns.append((offset + start, offset + stop))
            gains.append(np.sqrt(np.sum(low_order[start:stop] ** 2)) / _SQRT_4PI)
        blocks.append(block)
        grams.append(basis.T @ basis)
        conditions.append(condition)
        shell_weights[index] = 1.0
        residual_dof += index.size - pinv.shape[0]
    if scheme.n_b0 == 0:
        raise FeatureError("the data has no b = 0 volume to normalise the signal by")
    if residual_dof < 1:
        raise FeatureError(
            "the noise level cannot be estimated: it needs two b = 0 volumes or a shell with "
            "more directions than the coefficients of its fit"
        )
    return ShellDesign(
        spec=spec,
        projection=np.hstack(blocks).astype(np.float32),
        gram=block_diag(*grams).astype(np.float32),
        shell_weights=shell_weights.astype(np.float32),
        b0_weights=np.asarray(scheme.b0_mask, dtype=np.float32),
        band_columns=tuple(band_columns),
        residual_dof=int(residual_dof),
        conditions=np.asarray(conditions),
        gains=np.asarray(gains),
        orders=tuple(orders),
    )


def fibre_direction(signals: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Mean fibre direction from the quadratic (order <= 2) fit of every shell's signal.

    On each shell the order-0 and order-2 part of the signal is a quadratic form ``g^T A g``;
    for a signal axially symmetric about the fibre (as NODDI's), the eigenvector of ``A`` with
    the smallest eigenvalue (least signal) is the fibre direction. The shells' least-squares
    forms are summed, each weighted by the inverse of its noise gain (so shells with more
    directions count more). Works with any scheme that has a shell of 6 or more directions not
    all in one plane or cone.

    Parameters
    ----------
    signals : ndarray, shape (N, M)
        Signals normalised by their mean b = 0, volumes in the scheme's order.
    scheme : Scheme
        Their scheme.

    Returns
    -------
    ndarray, shape (N, 3)
        Unit vectors in the frame of the b-vectors (sign arbitrary).

    Raises
    ------
    FeatureError
        If no shell has a well-conditioned quadratic fit.
    """
    signals = np.asarray(signals, dtype=np.float64)
    total = np.zeros((signals.shape[0], 6))
    used = 0
    for s in range(scheme.shells.size):
        volumes = np.flatnonzero(scheme.shell_index == s)
        basis = _quadratic_basis(scheme.bvecs[volumes])
        if volumes.size < 6 or np.linalg.cond(sh_basis(scheme.bvecs[volumes], 2)) > MAX_CONDITION:
            continue
        fit = np.linalg.pinv(basis)
        total += (signals[:, volumes] @ fit.T) / np.sum(fit**2)
        used += 1
    if not used:
        raise FeatureError(
            "no shell has 6 or more well-spread directions to estimate the fibre direction from"
        )
    xx, yy, zz, xy, xz, yz = total.T
    matrices = np.stack(
        [np.stack([xx, xy, xz], -1), np.stack([xy, yy, yz], -1), np.stack([xz, yz, zz], -1)],
        axis=1,
    )
    return np.linalg.eigh(matrices)[1][:, :, 0]
