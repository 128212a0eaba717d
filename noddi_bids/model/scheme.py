"""Diffusion acquisition schemes: b-values, b-vectors, shells and a content hash.

A :class:`Scheme` is the single description of a diffusion protocol used by every
estimator in noddi-bids. It is read from FSL/BIDS ``.bval``/``.bvec`` text files with
:func:`read_scheme`, validated once (in :meth:`Scheme.__post_init__`), and identified
by a stable content :attr:`Scheme.hash` so that a data set can be checked against the
scheme a network was trained on (:meth:`Scheme.matches`).

Units: b-values in s/mm^2; b-vectors are unit vectors (rows of zeros are allowed for
b = 0 volumes).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "B0_THRESHOLD",
    "B_MATCH_TOLERANCE",
    "DOT_MATCH_TOLERANCE",
    "MIN_BVEC_NORM",
    "SHELL_TOLERANCE",
    "Scheme",
    "SchemeError",
    "SchemeWarning",
    "cluster_shells",
    "read_scheme",
    "reference_scheme",
    "write_scheme",
]

logger = logging.getLogger(__name__)

#: Volumes with b <= this value (s/mm^2) are treated as b = 0 (non-diffusion-weighted).
B0_THRESHOLD = 50.0
#: Largest gap (s/mm^2) between consecutive sorted b-values inside one shell. Same value
#: and same gap-based idea as MRtrix3's ``BValueEpsilon`` (80): jittered b-values such as
#: 695/700/705 or 990..1010 form one shell, while shells 700 and 1000 stay distinct.
SHELL_TOLERANCE = 80.0
#: Default per-volume b-value tolerance (s/mm^2) of :meth:`Scheme.matches` (DIPY's
#: ``unique_bvals_tolerance`` default).
B_MATCH_TOLERANCE = 20.0
#: Default tolerance on ``1 - |v1 . v2|`` in :meth:`Scheme.matches` (about 0.8 degrees).
DOT_MATCH_TOLERANCE = 1e-4
#: B-vectors shorter than this on diffusion-weighted volumes are rejected.
MIN_BVEC_NORM = 1e-6

_HASH_VERSION = b"noddi-bids-scheme-v1"
_HASH_BVEC_SCALE = 1e4  # b-vectors rounded to 1e-4 before hashing
_UNIT_NORM_EPS = 1e-12  # b-vectors within this of unit length are left as they are
_REFERENCE_PACKAGE = "noddi_bids"
_REFERENCE_DIR = ("data", "schemes")
_REFERENCE_STEM = "reference"
_SCHEME_LABEL = "scheme"


class SchemeError(ValueError):
    """Invalid acquisition scheme (b-values / b-vectors) or scheme file."""


class SchemeWarning(UserWarning):
    """Recoverable oddity in a scheme file (for example a transposed bvec file)."""


PathLike = str | os.PathLike[str]


def cluster_shells(
    bvals: ArrayLike,
    b0_threshold: float = B0_THRESHOLD,
    tolerance: float = SHELL_TOLERANCE,
) -> tuple[np.ndarray, np.ndarray]:
    """Group b-values into shells by 1-D gap clustering.

    The non-zero b-values (``b > b0_threshold``) are sorted; a new shell starts
    whenever the gap to the previous sorted value exceeds `tolerance`.

    Parameters
    ----------
    bvals : array_like, shape (M,)
        b-values in s/mm^2.
    b0_threshold : float, optional
        Volumes with ``b <= b0_threshold`` (s/mm^2) are b = 0 and belong to no shell.
    tolerance : float, optional
        Largest gap (s/mm^2) between consecutive sorted b-values within one shell.

    Returns
    -------
    shell_values : ndarray, shape (S,)
        Nominal b-value of each shell in s/mm^2 (mean of its members rounded to
        1 s/mm^2), ascending.
    index : ndarray of int, shape (M,)
        Shell index of each volume into `shell_values`; -1 for b = 0 volumes.

    Examples
    --------
    >>> values, index = cluster_shells([0, 695, 705, 1990, 2010])
    >>> values.tolist(), index.tolist()
    ([700.0, 2000.0], [-1, 0, 0, 1, 1])

    """
    b = np.asarray(bvals, dtype=np.float64).reshape(-1)
    index = np.full(b.shape, -1, dtype=np.int64)
    weighted = np.flatnonzero(b > b0_threshold)
    if weighted.size == 0:
        return np.empty(0, dtype=np.float64), index
    order = weighted[np.argsort(b[weighted], kind="stable")]
    sorted_b = b[order]
    labels = np.concatenate(([0], np.cumsum(np.diff(sorted_b) > tolerance)))
    index[order] = labels
    means = np.bincount(labels, weights=sorted_b) / np.bincount(labels)
    return np.round(means), index


def _validate(
    bvals: np.ndarray,
    bvecs: np.ndarray,
    b0_threshold: float,
    shell_tolerance: float,
    bval_label: str = _SCHEME_LABEL,
    bvec_label: str = _SCHEME_LABEL,
) -> None:
    """Raise :class:`SchemeError` unless the arrays describe a usable NODDI scheme.

    The single place where scheme content is checked; used by :class:`Scheme` (labels
    ``"scheme"``) and by :func:`read_scheme` (labels are the file names).
    """
    both = bval_label if bval_label == bvec_label else f"{bval_label} / {bvec_label}"
    if not np.isfinite(b0_threshold) or b0_threshold < 0:
        raise SchemeError(f"{both}: b0_threshold must be finite and >= 0, got {b0_threshold}.")
    if not np.isfinite(shell_tolerance) or shell_tolerance <= 0:
        raise SchemeError(f"{both}: shell_tolerance must be finite and > 0, got {shell_tolerance}.")
    if bvals.ndim != 1:
        raise SchemeError(f"{bval_label}: b-values must be 1-D, got shape {bvals.shape}.")
    if bvals.size == 0:
        raise SchemeError(f"{bval_label}: no b-values; the scheme has no volumes.")
    if bvecs.ndim != 2 or bvecs.shape[1] != 3:
        raise SchemeError(
            f"{bvec_label}: b-vectors must have shape (M, 3), got {bvecs.shape}; "
            "transpose a 3 x M array."
        )
    if bvecs.shape[0] != bvals.size:
        raise SchemeError(
            f"{both}: {bvals.size} b-values but {bvecs.shape[0]} b-vectors; "
            "check that the bval and bvec files belong to the same run."
        )
    bad = np.flatnonzero(~np.isfinite(bvals))
    if bad.size:
        raise SchemeError(
            f"{bval_label}: b-value of volume {bad[0]} is {bvals[bad[0]]} "
            f"({bad.size} non-finite value(s)); regenerate the bval file from the DICOMs."
        )
    bad = np.flatnonzero(~np.isfinite(bvecs).all(axis=1))
    if bad.size:
        raise SchemeError(
            f"{bvec_label}: b-vector of volume {bad[0]} is {bvecs[bad[0]].tolist()} "
            f"({bad.size} non-finite vector(s)); regenerate the bvec file from the DICOMs."
        )
    bad = np.flatnonzero(bvals < 0)
    if bad.size:
        raise SchemeError(
            f"{bval_label}: negative b-value {bvals[bad[0]]:g} s/mm^2 at volume {bad[0]} "
            f"({bad.size} negative value(s)); b-values must be >= 0."
        )
    weighted = bvals > b0_threshold
    norms = np.linalg.norm(bvecs, axis=1)
    bad = np.flatnonzero(weighted & (norms < MIN_BVEC_NORM))
    if bad.size:
        raise SchemeError(
            f"{bvec_label}: zero-length b-vector at volume {bad[0]} with "
            f"b = {bvals[bad[0]]:g} s/mm^2 in {bval_label} ({bad.size} such volume(s)); "
            "every diffusion-weighted volume needs a direction. Check the files or "
            "raise b0_threshold if these are b = 0 volumes."
        )
    if not np.any(~weighted):
        raise SchemeError(
            f"{bval_label}: no b = 0 volume (b <= {b0_threshold:g} s/mm^2; smallest "
            f"b-value is {bvals.min():g}); NODDI normalises by the b = 0 signal. Use data "
            "with b = 0 volumes or raise b0_threshold."
        )
    shells, index = cluster_shells(bvals, b0_threshold, shell_tolerance)
    if shells.size < 2:
        found = _describe(bvals.size, int(np.sum(~weighted)), shells, np.bincount(index[weighted]))
        raise SchemeError(
            f"{bval_label}: NODDI needs at least two non-zero b-shells; found "
            f"{shells.size} ({found}). Acquire a multi-shell protocol (e.g. b = 700 and "
            "2000 s/mm^2)."
        )


def _describe(n_volumes: int, n_b0: int, shells: np.ndarray, counts: np.ndarray) -> str:
    """Return e.g. ``"81 volumes: b=0 x9, b=700 x24, b=2000 x48"``."""
    parts = [f"b=0 x{n_b0}"] if n_b0 else []
    parts += [f"b={b:g} x{int(c)}" for b, c in zip(shells, counts, strict=True)]
    return f"{n_volumes} volumes: " + ", ".join(parts)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False, repr=False)
class Scheme:
    """A validated diffusion acquisition scheme.

    Construction validates the content (raising :class:`SchemeError`), copies the
    arrays to read-only float64 and normalises the b-vectors of diffusion-weighted
    volumes to unit length. b = 0 rows are kept as given (zeros are allowed).

    Parameters
    ----------
    bvals : ndarray, shape (M,)
        b-values in s/mm^2, in acquisition order.
    bvecs : ndarray, shape (M, 3)
        Gradient directions (unit vectors after construction; ``v`` and ``-v``
        encode the same measurement).
    b0_threshold : float, optional
        Volumes with ``b <= b0_threshold`` (s/mm^2) count as b = 0. Default 50.
    shell_tolerance : float, optional
        Shell clustering gap in s/mm^2 (see :func:`cluster_shells`). Default 80.

    Examples
    --------
    >>> import numpy as np
    >>> s = Scheme(np.array([0.0, 700, 2000]), np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0]]))
    >>> s.summary()
    '3 volumes: b=0 x1, b=700 x1, b=2000 x1'

    """

    bvals: np.ndarray
    bvecs: np.ndarray
    b0_threshold: float = B0_THRESHOLD
    shell_tolerance: float = SHELL_TOLERANCE

    def __post_init__(self) -> None:
        try:
            bvals = np.array(self.bvals, dtype=np.float64)
            bvecs = np.array(self.bvecs, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise SchemeError(
                f"{_SCHEME_LABEL}: b-values/b-vectors are not numeric ({err})."
            ) from err
        b0_threshold = float(self.b0_threshold)
        shell_tolerance = float(self.shell_tolerance)
        _validate(bvals, bvecs, b0_threshold, shell_tolerance)
        norms = np.linalg.norm(bvecs, axis=1)
        # Skip rows already unit to rounding, so that re-normalising is exact (round trips).
        rescale = (bvals > b0_threshold) & (np.abs(norms - 1.0) > _UNIT_NORM_EPS)
        bvecs[rescale] /= norms[rescale, None]
        object.__setattr__(self, "bvals", _readonly(bvals))
        object.__setattr__(self, "bvecs", _readonly(bvecs))
        object.__setattr__(self, "b0_threshold", b0_threshold)
        object.__setattr__(self, "shell_tolerance", shell_tolerance)

    # -- shells --------------------------------------------------------------------
    @property
    def n_measurements(self) -> int:
        """Number of volumes M."""
        return int(self.bvals.size)

    @cached_property
    def b0_mask(self) -> np.ndarray:
        """Boolean mask (M,) of b = 0 volumes (``b <= b0_threshold``)."""
        return _readonly(self.bvals <= self.b0_threshold)

    @property
    def n_b0(self) -> int:
        """Number of b = 0 volumes."""
        return int(np.count_nonzero(self.b0_mask))

    @cached_property
    def _clusters(self) -> tuple[np.ndarray, np.ndarray]:
        shells, index = cluster_shells(self.bvals, self.b0_threshold, self.shell_tolerance)
        return _readonly(shells), _readonly(index)

    @property
    def shells(self) -> np.ndarray:
        """Nominal b-values (s/mm^2) of the non-zero shells, ascending, shape (S,)."""
        return self._clusters[0]

    @property
    def shell_index(self) -> np.ndarray:
        """Shell of each volume (M,): index into :attr:`shells`, -1 for b = 0."""
        return self._clusters[1]

    @cached_property
    def shell_counts(self) -> np.ndarray:
        """Number of volumes in each shell, shape (S,)."""
        counts = np.bincount(self.shell_index[~self.b0_mask], minlength=self.shells.size)
        return _readonly(counts)

    # -- identity ------------------------------------------------------------------
    @cached_property
    def hash(self) -> str:
        """Stable content hash (16 hex characters of SHA-256).

        b-values rounded to 1 s/mm^2 and b-vectors rounded to 1e-4 with a canonical
        sign (first non-zero rounded component positive, since ``v`` and ``-v`` are
        the same encoding); b = 0 vectors are zeroed; volume order is preserved.
        Independent of ``b0_threshold``/``shell_tolerance`` except through which
        volumes count as b = 0.
        """
        bvals = np.rint(self.bvals).astype(np.int64)
        bvecs = np.rint(self.bvecs * _HASH_BVEC_SCALE).astype(np.int64)
        bvecs[self.b0_mask] = 0
        nonzero = bvecs != 0
        first = np.argmax(nonzero, axis=1)
        lead = bvecs[np.arange(bvecs.shape[0]), first]
        bvecs[lead < 0] *= -1
        digest = hashlib.sha256(_HASH_VERSION)
        digest.update(np.int64(bvals.size).tobytes())
        digest.update(np.ascontiguousarray(bvals, dtype="<i8").tobytes())
        digest.update(np.ascontiguousarray(bvecs, dtype="<i8").tobytes())
        return digest.hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scheme):
            return NotImplemented
        return (
            np.array_equal(self.bvals, other.bvals)
            and np.array_equal(self.bvecs, other.bvecs)
            and self.b0_threshold == other.b0_threshold
            and self.shell_tolerance == other.shell_tolerance
        )

    def __hash__(self) -> int:
        return hash((self.hash, self.b0_threshold, self.shell_tolerance))

    def __repr__(self) -> str:
        return f"Scheme({self.summary()}, hash={self.hash})"

    def summary(self) -> str:
        """Return a one-line description, e.g. ``"81 volumes: b=0 x9, b=700 x24"``."""
        return _describe(self.n_measurements, self.n_b0, self.shells, self.shell_counts)

    # -- comparison ----------------------------------------------------------------
    def matches(
        self,
        other: Scheme,
        b_tol: float = B_MATCH_TOLERANCE,
        dot_tol: float = DOT_MATCH_TOLERANCE,
        rotation: bool = False,
    ) -> tuple[bool, str]:
        """Check that `other` is the same protocol, volume by volume.

        With ``rotation=True`` the b-vectors are compared after the proper rotation that best
        maps this scheme's onto `other`'s: a table rotated as a whole (another head position,
        or the same protocol in another frame) is the same protocol for a model of the signal,
        since rotating the table is rotating the tissue.

        Parameters
        ----------
        other : Scheme
            Scheme to compare with (e.g. a data set's scheme against the scheme a
            network was trained on).
        b_tol : float, optional
            Largest allowed per-volume b-value difference in s/mm^2.
        dot_tol : float, optional
            Directions of diffusion-weighted volumes must satisfy
            ``|v1 . v2| >= 1 - dot_tol`` (sign is irrelevant).
        rotation : bool, optional
            Compare the b-vectors up to one global rotation.

        Returns
        -------
        ok : bool
            True when the schemes match.
        reason : str
            ``"schemes match"`` or what differs first (index and values).

        """
        if self.n_measurements != other.n_measurements:
            return False, (
                f"different number of volumes: {self.n_measurements} vs {other.n_measurements}"
            )
        diff = np.abs(self.bvals - other.bvals)
        bad = np.flatnonzero(diff > b_tol)
        if bad.size:
            i = bad[0]
            return False, (
                f"b-value of volume {i} differs: {self.bvals[i]:g} vs {other.bvals[i]:g} "
                f"s/mm^2 (tolerance {b_tol:g}; {bad.size} volume(s) differ)"
            )
        bad = np.flatnonzero(self.b0_mask != other.b0_mask)
        if bad.size:
            i = bad[0]
            return False, (
                f"volume {i} is b = 0 in one scheme only: b = {self.bvals[i]:g} vs "
                f"{other.bvals[i]:g} s/mm^2 (b0 thresholds {self.b0_threshold:g} vs "
                f"{other.b0_threshold:g})"
            )
        mine = self.bvecs
        if rotation:
            weighted = ~self.b0_mask
            mine = mine @ best_rotation(mine[weighted], other.bvecs[weighted]).T
        dots = np.abs(np.sum(mine * other.bvecs, axis=1))
        bad = np.flatnonzero(~self.b0_mask & (dots < 1.0 - dot_tol))
        if bad.size:
            i = bad[0]
            angle = np.degrees(np.arccos(np.clip(dots[i], 0.0, 1.0)))
            rotated = " after the best global rotation" if rotation else ""
            return False, (
                f"b-vector of volume {i} differs{rotated}: {np.round(mine[i], 4).tolist()} vs "
                f"{np.round(other.bvecs[i], 4).tolist()} ({angle:.2f} degrees apart; "
                f"{bad.size} volume(s) differ)"
            )
        return True, "schemes match" + (" up to a global rotation" if rotation else "")

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return JSON-able metadata (plain lists of floats) including the hash."""
        return {
            "bvals": [float(b) for b in self.bvals],
            "bvecs": [[float(x) for x in row] for row in self.bvecs],
            "b0_threshold": self.b0_threshold,
            "shell_tolerance": self.shell_tolerance,
            "shells": [float(b) for b in self.shells],
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scheme:
        """Build a scheme from :meth:`to_dict` output.

        Parameters
        ----------
        data : mapping
            Needs ``"bvals"`` and ``"bvecs"``; ``"b0_threshold"`` and
            ``"shell_tolerance"`` are optional. If ``"hash"`` is present it must match
            the content. Other keys are ignored.

        Returns
        -------
        Scheme
            The validated scheme.

        """
        missing = [key for key in ("bvals", "bvecs") if key not in data]
        if missing:
            raise SchemeError(f"{_SCHEME_LABEL}: metadata lacks {', '.join(missing)}.")
        scheme = cls(
            np.asarray(data["bvals"], dtype=np.float64),
            np.asarray(data["bvecs"], dtype=np.float64),
            b0_threshold=float(data.get("b0_threshold", B0_THRESHOLD)),
            shell_tolerance=float(data.get("shell_tolerance", SHELL_TOLERANCE)),
        )
        expected = data.get("hash")
        if expected is not None and expected != scheme.hash:
            raise SchemeError(
                f"{_SCHEME_LABEL}: metadata hash {expected} does not match its content "
                f"({scheme.hash}); the metadata was edited or corrupted."
            )
        return scheme


def best_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Proper rotation that best maps unit vectors `source` onto `target`, each up to sign.

    A diffusion encoding ``v`` equals ``-v``, so the pairing signs are unknown: they are set
    from a rotation fitted (Kabsch) to three well-separated rows under each of their eight sign
    patterns, then the rotation is refitted to all rows; the pattern with the closest fit wins.

    Parameters
    ----------
    source, target : ndarray, shape (n, 3)
        Paired unit vectors (n >= 3, not all in one plane for a unique answer).

    Returns
    -------
    ndarray, shape (3, 3)
        Rotation ``R`` with ``R @ source[i]`` closest to ``+-target[i]``.
    """
    anchors = [0]
    anchors.append(int(np.argmin(np.abs(source @ source[0]))))
    normal = np.cross(source[anchors[0]], source[anchors[1]])
    anchors.append(int(np.argmax(np.abs(source @ normal))))
    best, best_score = np.eye(3), -np.inf
    for signs in itertools.product((1.0, -1.0), repeat=3):
        rotation = _kabsch(source[anchors], target[anchors] * np.asarray(signs)[:, None])
        flips = np.sign(np.sum((source @ rotation.T) * target, axis=1))
        rotation = _kabsch(source, target * np.where(flips == 0, 1.0, flips)[:, None])
        score = np.min(np.abs(np.sum((source @ rotation.T) * target, axis=1)))
        if score > best_score:
            best, best_score = rotation, score
    return best


def _kabsch(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Proper rotation minimising ``sum |R s_i - t_i|^2`` (SVD of the cross-covariance)."""
    u, _, vt = np.linalg.svd(target.T @ source)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


# -- files -------------------------------------------------------------------------
def _read_table(path: PathLike) -> np.ndarray:
    """Read a whitespace-separated numeric text table as a 2-D float64 array."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SchemeError(f"{path}: cannot read scheme file ({err}).") from err
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            rows.append([float(token) for token in tokens])
        except ValueError as err:
            raise SchemeError(
                f"{path}: line {lineno} is not numeric ({line.strip()[:60]!r}); expected "
                "whitespace-separated numbers in FSL/BIDS format."
            ) from err
    if not rows:
        raise SchemeError(f"{path}: file is empty; expected FSL/BIDS numbers.")
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise SchemeError(
            f"{path}: rows have different lengths {sorted(lengths)}; the file is "
            "truncated or malformed."
        )
    return np.array(rows, dtype=np.float64)


def _bvals_from_table(table: np.ndarray, path: PathLike) -> np.ndarray:
    if table.shape[0] == 1 or table.shape[1] == 1:
        return table.reshape(-1)
    raise SchemeError(
        f"{path}: expected one row (or one column) of b-values, got a "
        f"{table.shape[0]} x {table.shape[1]} table."
    )


def _bvecs_from_table(table: np.ndarray, path: PathLike) -> np.ndarray:
    if table.shape[0] == 3:
        return table.T
    if table.shape[1] == 3:
        warnings.warn(
            f"{path}: b-vectors stored as {table.shape[0]} rows x 3 columns; reading it "
            "transposed. FSL/BIDS expect 3 rows x M columns.",
            SchemeWarning,
            stacklevel=3,
        )
        return table
    raise SchemeError(
        f"{path}: expected 3 rows of b-vector components (x, y, z), got a "
        f"{table.shape[0]} x {table.shape[1]} table."
    )


def read_scheme(
    bval_path: PathLike,
    bvec_path: PathLike,
    *,
    b0_threshold: float = B0_THRESHOLD,
    shell_tolerance: float = SHELL_TOLERANCE,
    n_volumes: int | None = None,
) -> Scheme:
    """Read and validate an FSL/BIDS ``.bval``/``.bvec`` pair.

    Parameters
    ----------
    bval_path : str or path-like
        Whitespace-separated b-values in s/mm^2, one row (one column accepted).
    bvec_path : str or path-like
        b-vectors as 3 rows x M columns (M rows x 3 columns accepted with a
        :class:`SchemeWarning`). Diffusion-weighted vectors are normalised.
    b0_threshold : float, optional
        Volumes with ``b <= b0_threshold`` (s/mm^2) count as b = 0.
    shell_tolerance : float, optional
        Shell clustering gap in s/mm^2 (see :func:`cluster_shells`).
    n_volumes : int, optional
        Number of volumes in the image (its 4th dimension); checked when given.

    Returns
    -------
    Scheme
        The validated scheme.

    Raises
    ------
    SchemeError
        If a file is unreadable, empty, non-numeric or mis-shaped, the counts
        disagree, or the content is not a usable NODDI scheme; the message names
        the file.

    """
    bvals = _bvals_from_table(_read_table(bval_path), bval_path)
    bvecs = _bvecs_from_table(_read_table(bvec_path), bvec_path)
    if bvals.size != bvecs.shape[0]:
        raise SchemeError(
            f"{bval_path} has {bvals.size} b-values but {bvec_path} has "
            f"{bvecs.shape[0]} b-vectors; check that they belong to the same run."
        )
    if n_volumes is not None and bvals.size != n_volumes:
        raise SchemeError(
            f"{bval_path} and {bvec_path} describe {bvals.size} volumes but the image "
            f"has {n_volumes}; check that the files belong to this image."
        )
    _validate(bvals, bvecs, b0_threshold, shell_tolerance, str(bval_path), str(bvec_path))
    norms = np.linalg.norm(bvecs[bvals > b0_threshold], axis=1)
    if np.any(np.abs(norms - 1.0) > 1e-3):
        logger.info(
            "%s: normalising b-vectors (norms %.3g..%.3g)", bvec_path, norms.min(), norms.max()
        )
    return Scheme(bvals, bvecs, b0_threshold=b0_threshold, shell_tolerance=shell_tolerance)


def write_scheme(scheme: Scheme, bval_path: PathLike, bvec_path: PathLike) -> None:
    """Write a scheme as FSL/BIDS text files.

    Parameters
    ----------
    scheme : Scheme
        Scheme to write.
    bval_path : str or path-like
        Output b-values (one row; integral values written as integers), s/mm^2.
    bvec_path : str or path-like
        Output b-vectors (3 rows, 6 decimals).

    """
    bvals = " ".join(np.format_float_positional(b, trim="-") for b in scheme.bvals)
    Path(bval_path).write_text(bvals + "\n", encoding="utf-8")
    rows = (" ".join(f"{x:.6f}" for x in component) for component in scheme.bvecs.T)
    Path(bvec_path).write_text("\n".join(rows) + "\n", encoding="utf-8")


@lru_cache(maxsize=1)
def reference_scheme() -> Scheme:
    """Return the shipped reference protocol (NODDI toolbox example scheme).

    81 volumes: 9 interleaved b = 0, 24 directions at b = 700 and 48 at b = 2000
    s/mm^2, generated by ``tools/make_reference_scheme.py``.

    Returns
    -------
    Scheme
        The reference scheme (cached; schemes are immutable).

    """
    folder = (
        resources.files(_REFERENCE_PACKAGE).joinpath(_REFERENCE_DIR[0]).joinpath(_REFERENCE_DIR[1])
    )
    bval = folder.joinpath(f"{_REFERENCE_STEM}.bval")
    bvec = folder.joinpath(f"{_REFERENCE_STEM}.bvec")
    with resources.as_file(bval) as bval_path, resources.as_file(bvec) as bvec_path:
        return read_scheme(bval_path, bvec_path)
