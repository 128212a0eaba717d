"""Synthetic training data for the NODDI networks: parameters, signals, noise and labels.

Parameters are drawn uniformly within :class:`ParameterLimits`, fibre orientations uniformly on
the sphere (normalised Gaussian vectors), noise-free signals come from the exact interpolation
tables of the fitter (:mod:`noddi_bids.fit.tables`, checked against
:func:`noddi_bids.model.noddi.noddi_signal` in the tests), Rician noise is added at the chosen
SNR relative to b = 0, and the network input is the noisy signal normalised by its mean b = 0.

Labels are the ground truth (``gt``) and, for ``mle`` and ``hybrid`` training, the Rician
maximum-likelihood fit of every noisy signal started from its ground truth (as in the study).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, prange
from tqdm.auto import tqdm

from noddi_bids.fit.signal import model_signal, scratch_arrays, set_threads
from noddi_bids.fit.tables import SignalTables, build_tables
from noddi_bids.model.noddi import D_ISO, D_PAR, ODI_MIN
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.normalise import normalise_by_b0
from noddi_bids.model.scheme import Scheme
from noddi_bids.nn.features import FeatureSpec, design
from noddi_bids.nn.schemes import MAX_TILT_DEGREES, random_scheme
from noddi_bids.progress import no_bar

LOGGER = logging.getLogger(__name__)

#: Order of the estimated parameters (network outputs and label columns).
PARAMETERS = ("odi", "ndi", "fwf")
#: Default number of training samples (2^18, as in the study).
DEFAULT_SAMPLES = 2**18
#: Default signal-to-noise ratio of the b = 0 signal.
DEFAULT_SNR = 15.0
#: Label types: ground truth, MLE fit started from the truth, or a weighted mix of both.
LABEL_TYPES = ("mle", "gt", "hybrid")

SnrSpec = float | tuple[float, float]
#: Leading noisy signals stored with saved MLE labels to prove they belong to the same data.
_PROBE_ROWS = 256
_PROBE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ParameterLimits:
    """Uniform sampling limits of the training parameters.

    Defaults and why:

    - ``odi`` in [0.01, 0.99]: 0.01 is the model's most concentrated Watson distribution
      (kappa 64; sticks that are more coherent look identical at clinical b-values); at ODI 1
      (kappa 0) every orientation gives the same signal, so the orientation is undefined and
      the exact isotropic point is left out.
    - ``ndi`` in [0.01, 0.99]: at NDI 0 the hindered tensor is isotropic (tortuosity
      ``d_perp = d_par``), so ODI has no effect on the signal and intra/extra-neurite signals
      trade off; the lower limit keeps a neurite compartment in every sample.
    - ``fwf`` in [0, 1]: the free-water fraction stays identifiable over the whole range and
      CSF voxels (FWF ~ 0.95) must be representable. At high FWF, ODI and NDI become poorly
      determined; the networks then return their label's conditional mean, so ODI/NDI are not
      interpreted in CSF (the app reports FWF only there).

    Attributes
    ----------
    odi, ndi, fwf : tuple of float
        (low, high) limits, within [ODI_MIN, 1] for ODI and [0, 1] for the fractions.
    """

    odi: tuple[float, float] = (0.01, 0.99)
    ndi: tuple[float, float] = (0.01, 0.99)
    fwf: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        for name in PARAMETERS:
            low, high = (float(v) for v in getattr(self, name))
            floor = ODI_MIN if name == "odi" else 0.0
            if not floor <= low < high <= 1.0:
                raise ValueError(
                    f"{name} limits must satisfy {floor:.4g} <= low < high <= 1, "
                    f"got ({low}, {high})"
                )
            object.__setattr__(self, name, (low, high))

    def to_dict(self) -> dict[str, list[float]]:
        """Return the limits as JSON-able lists."""
        return {key: list(value) for key, value in asdict(self).items()}

    @property
    def low(self) -> np.ndarray:
        """Lower limits in :data:`PARAMETERS` order, shape (3,)."""
        return np.array([getattr(self, name)[0] for name in PARAMETERS])

    @property
    def high(self) -> np.ndarray:
        """Upper limits in :data:`PARAMETERS` order, shape (3,)."""
        return np.array([getattr(self, name)[1] for name in PARAMETERS])


@dataclass(frozen=True)
class TrainingSet:
    """Synthetic training data.

    Attributes
    ----------
    inputs : ndarray of float32, shape (N, F)
        The network inputs: noisy signals normalised by their mean b = 0 (raw-signal networks,
        F = M) or their rotation-invariant features (:mod:`noddi_bids.nn.features`).
    truth : ndarray of float32, shape (N, 3)
        Ground-truth ODI, NDI, FWF.
    mle : ndarray of float32, shape (N, 3) or None
        MLE fit of each noisy signal started from the truth (None for ``gt`` data).
    directions : ndarray, shape (N, 3)
        Ground-truth unit fibre orientations.
    snr : ndarray, shape (N,)
        SNR of each sample.
    settings : dict
        How the set was made (sample count, seed, limits, SNR, diffusivities).
    """

    inputs: np.ndarray
    truth: np.ndarray
    mle: np.ndarray | None
    directions: np.ndarray
    snr: np.ndarray
    settings: dict[str, Any]


def random_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw unit vectors uniformly on the sphere (normalised Gaussian vectors), shape (n, 3)."""
    vectors = rng.standard_normal((n, 3))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(float).tiny)


def sample_parameters(n: int, limits: ParameterLimits, rng: np.random.Generator) -> np.ndarray:
    """ODI, NDI, FWF drawn independently and uniformly within `limits`, shape (n, 3)."""
    return rng.uniform(limits.low, limits.high, size=(n, 3))


def sample_snr(
    n: int, snr: SnrSpec, rng: np.random.Generator, log_uniform: bool = False
) -> np.ndarray:
    """Per-sample SNR: a constant, or drawn within a ``(low, high)`` range, shape (n,).

    Parameters
    ----------
    n : int
        Number of samples.
    snr : float or (float, float)
        Constant SNR or range.
    rng : numpy.random.Generator
    log_uniform : bool
        Draw a range uniformly in log(SNR) (as many samples between 5 and 10 as between 40 and
        80) instead of uniformly in SNR.

    Returns
    -------
    ndarray, shape (n,)
    """
    if np.ndim(snr) == 0:
        values = np.full(n, float(snr))
    else:
        low, high = (float(v) for v in snr)
        if not 0 < low <= high:
            raise ValueError(f"SNR range must satisfy 0 < low <= high, got ({low}, {high})")
        if log_uniform:
            values = np.exp(rng.uniform(np.log(low), np.log(high), size=n))
        else:
            values = rng.uniform(low, high, size=n)
    if not np.all(values > 0):
        raise ValueError(f"SNR must be positive, got {snr}")
    return values


@lru_cache(maxsize=8)
def scheme_tables(scheme: Scheme, d_par: float = D_PAR, d_iso: float = D_ISO) -> SignalTables:
    """Interpolation tables of a scheme, built once per scheme and diffusivities (cached)."""
    return build_tables(scheme.bvals, scheme.bvecs, d_par, d_iso)


@njit(cache=True, parallel=True)
def _synthesise(parameters, directions, tables, out):  # pragma: no cover - compiled
    for i in prange(parameters.shape[0]):
        model_signal(
            parameters[i, 0],
            parameters[i, 1],
            parameters[i, 2],
            directions[i],
            1.0,
            tables,
            scratch_arrays(tables),
            out[i],
        )


def synthesise_signals(
    parameters: np.ndarray,
    directions: np.ndarray,
    scheme: Scheme,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    tables: SignalTables | None = None,
) -> np.ndarray:
    """Noise-free normalised NODDI signals through the fitter's exact tables (compiled, parallel).

    Parameters
    ----------
    parameters : ndarray, shape (N, 3)
        ODI, NDI, FWF per voxel.
    directions : ndarray, shape (N, 3)
        Unit fibre orientations.
    scheme : Scheme
        Acquisition scheme (b-values in s/mm^2).
    d_par, d_iso : float
        Intra-neurite parallel and free-water diffusivities, mm^2/s.
    tables : SignalTables, optional
        Prebuilt tables for this scheme and these diffusivities (built when omitted).

    Returns
    -------
    ndarray, shape (N, M)
        ``S / S0``; agrees with :func:`noddi_bids.model.noddi.noddi_signal` to ~1e-9.
    """
    if tables is None:
        tables = scheme_tables(scheme, d_par, d_iso)
    parameters = np.ascontiguousarray(parameters, dtype=np.float64).reshape(-1, 3)
    directions = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    directions = np.ascontiguousarray(
        directions / np.linalg.norm(directions, axis=1, keepdims=True)
    )
    if parameters.shape[0] != directions.shape[0]:
        raise ValueError(
            f"{parameters.shape[0]} parameter rows but {directions.shape[0]} directions"
        )
    out = np.empty((parameters.shape[0], scheme.n_measurements))
    _synthesise(parameters, directions, tables.packed(), out)
    return out


def mle_labels(
    noisy: np.ndarray,
    truth: np.ndarray,
    directions: np.ndarray,
    snr: np.ndarray,
    scheme: Scheme,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    n_threads: int | None = None,
    progress: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rician MLE of each noisy signal started from its ground truth (training labels).

    Parameters
    ----------
    noisy : ndarray, shape (N, M)
        Noisy signals on the scale where the true S0 is 1.
    truth : ndarray, shape (N, 3)
        Ground-truth ODI, NDI, FWF (the starting point).
    directions : ndarray, shape (N, 3)
        Ground-truth orientations (the starting orientation).
    snr : ndarray, shape (N,)
        SNR of each sample; the fit uses the known ``sigma = 1 / snr``.
    scheme : Scheme
        Acquisition scheme.
    d_par, d_iso : float
        Diffusivities, mm^2/s.
    n_threads : int, optional
        Threads of the compiled fitter.
    progress : bool, optional
        Progress bar.

    Returns
    -------
    labels : ndarray, shape (N, 3)
        Fitted ODI, NDI, FWF.
    valid : ndarray of bool, shape (N,)
        Voxels the fitter accepted (finite results).
    """
    # Imported here: the fitter pulls in DIPY (tensor fits for its own starting points), which
    # synthesis and ground-truth training do not need.
    from noddi_bids.fit.mle import NoddiMLE

    init = {
        "odi": truth[:, 0],
        "ndi": truth[:, 1],
        "fwf": truth[:, 2],
        "direction": directions,
        "s0": np.ones(truth.shape[0]),
    }
    model = NoddiMLE(scheme, d_par=d_par, d_iso=d_iso, n_threads=n_threads)
    fit = model.fit(noisy, sigma=1.0 / snr, init=init, progress=progress)
    labels = fit.parameters
    return labels, fit.valid & np.all(np.isfinite(labels), axis=1)


def make_training_set(
    scheme: Scheme,
    n_samples: int = DEFAULT_SAMPLES,
    *,
    labels: str = "mle",
    limits: ParameterLimits | None = None,
    snr: SnrSpec = DEFAULT_SNR,
    seed: int = 0,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    n_threads: int | None = None,
    progress: bool | None = None,
    mle_labels_file: str | os.PathLike[str] | None = None,
    save_mle_labels: str | os.PathLike[str] | None = None,
) -> TrainingSet:
    """Draw parameters, synthesise noisy normalised signals and compute the labels.

    Parameters
    ----------
    scheme : Scheme
        Acquisition scheme the network will be trained for.
    n_samples : int
        Number of samples.
    labels : {"mle", "gt", "hybrid"}
        Label type; MLE labels are computed for ``mle`` and ``hybrid``.
    limits : ParameterLimits, optional
        Sampling limits (default :class:`ParameterLimits`).
    snr : float or (float, float)
        SNR relative to b = 0, or a range drawn uniformly per sample.
    seed : int
        Seed of the random generator; equal arguments give identical data.
    d_par, d_iso : float
        Diffusivities, mm^2/s.
    n_threads : int, optional
        Threads of the compiled kernels.
    progress : bool, optional
        Progress bar of the MLE labelling.
    mle_labels_file : path-like, optional
        MLE labels saved by an earlier call with the same arguments (`save_mle_labels`); they
        are checked against this data (settings, scheme, leading signals) and used instead of
        fitting again. Lets the expensive labelling run on one machine and training on another.
    save_mle_labels : path-like, optional
        Save the MLE labels (``.npz``) for reuse.

    Returns
    -------
    TrainingSet
    """
    if labels not in LABEL_TYPES:
        raise ValueError(f"labels must be one of {LABEL_TYPES}, got {labels!r}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    limits = ParameterLimits() if limits is None else limits
    rng = np.random.default_rng(seed)
    truth = sample_parameters(n_samples, limits, rng)
    directions = random_directions(n_samples, rng)
    snr_values = sample_snr(n_samples, snr, rng)
    set_threads(n_threads)
    LOGGER.info("Synthesising %d signals for %s", n_samples, scheme.summary())
    clean = synthesise_signals(truth, directions, scheme, d_par, d_iso)
    noisy = add_rician_noise(clean, snr_values, rng)
    del clean
    signals, keep = normalise_by_b0(noisy, scheme.b0_mask)
    settings = {
        "n_samples": int(n_samples),
        "seed": int(seed),
        "limits": limits.to_dict(),
        "snr": list(snr) if np.ndim(snr) else float(snr),
        "d_par": float(d_par),
        "d_iso": float(d_iso),
        "scheme": scheme.hash,
    }
    mle = None
    if labels != "gt" and mle_labels_file is not None:
        mle = load_mle_labels(mle_labels_file, settings, signals)
        keep &= np.all(np.isfinite(mle), axis=1)
    elif labels != "gt":
        LOGGER.info("Labelling %d signals with the MLE fit started from the truth", n_samples)
        mle, valid = mle_labels(
            noisy, truth, directions, snr_values, scheme, d_par, d_iso, n_threads, progress
        )
        mle[~valid] = np.nan
        keep &= valid
        if save_mle_labels is not None:
            _save_mle_labels(save_mle_labels, mle, settings, signals)
    if not keep.all():
        LOGGER.warning("Dropped %d of %d samples (invalid b = 0 or fit)", (~keep).sum(), keep.size)
    return TrainingSet(
        inputs=signals[keep].astype(np.float32),
        truth=truth[keep].astype(np.float32),
        mle=None if mle is None else mle[keep].astype(np.float32),
        directions=directions[keep],
        snr=snr_values[keep],
        settings=settings,
    )


def _save_mle_labels(
    path: str | os.PathLike[str], mle: np.ndarray, settings: dict, signals: np.ndarray
) -> None:
    np.savez_compressed(
        Path(path),
        mle=mle,
        settings=np.array(json.dumps(settings, sort_keys=True)),
        probe=signals[:_PROBE_ROWS].astype(np.float32),
    )
    LOGGER.info("Saved MLE labels to %s", path)


def load_mle_labels(
    path: str | os.PathLike[str], settings: dict, signals: np.ndarray
) -> np.ndarray:
    """Load MLE labels saved by :func:`make_training_set` and check they fit this data.

    Parameters
    ----------
    path : path-like
        ``.npz`` written with ``save_mle_labels``.
    settings : dict
        Settings of the data being made (sample count, seed, limits, SNR, diffusivities, scheme
        hash); must equal the saved ones.
    signals : ndarray, shape (N, M)
        Normalised noisy signals of the data being made; the leading rows must equal the saved
        probe (to 1e-5), which proves the same random draws.

    Returns
    -------
    ndarray, shape (N, 3)
        Labels (NaN where the fit failed).
    """
    with np.load(Path(path)) as saved:
        mle, probe = saved["mle"], saved["probe"]
        saved_settings = json.loads(str(saved["settings"]))
    if saved_settings != settings:
        raise ValueError(
            f"{path}: MLE labels were made with {saved_settings}, not {settings}; "
            "use the same samples, seed, limits, SNR, diffusivities and scheme."
        )
    rows = probe.shape[0]
    if mle.shape != (signals.shape[0], 3) or not np.allclose(
        probe, signals[:rows], atol=_PROBE_TOLERANCE, rtol=0
    ):
        raise ValueError(
            f"{path}: MLE labels do not belong to these signals (random draws differ)."
        )
    LOGGER.info("Loaded MLE labels from %s", path)
    return mle


#: Default SNR range of rotation-invariant networks (b = 0 SNR, drawn log-uniformly).
DEFAULT_SNR_RANGE = (5.0, 80.0)
#: Default number of random acquisition schemes a rotation-invariant training set spans.
DEFAULT_TRAINING_SCHEMES = 256


def make_invariant_training_set(
    spec: FeatureSpec,
    n_samples: int = DEFAULT_SAMPLES,
    *,
    labels: str = "mle",
    limits: ParameterLimits | None = None,
    snr: tuple[float, float] = DEFAULT_SNR_RANGE,
    n_schemes: int = DEFAULT_TRAINING_SCHEMES,
    seed: int = 0,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
    n_threads: int | None = None,
    progress: bool | None = None,
) -> TrainingSet:
    """Training data of a rotation-invariant network: features of signals on random schemes.

    The samples are spread over `n_schemes` random acquisition schemes with the spec's shells
    (:func:`noddi_bids.nn.schemes.random_scheme`: direction counts, spreading, tilts and b = 0
    counts vary as between real tables). On each scheme, signals are synthesised from uniform
    parameters and orientations, Rician noise is added at a per-sample SNR drawn log-uniformly
    within `snr`, and the rotation-invariant features are computed from the noisy signals
    normalised by their mean b = 0 (:mod:`noddi_bids.nn.features`). MLE labels are fitted on the
    sample's own scheme at its own SNR, started from the truth.

    Parameters
    ----------
    spec : FeatureSpec
        Shells, orders and trained ranges.
    n_samples : int
        Number of samples.
    labels : {"mle", "gt", "hybrid"}
        Label type; MLE labels are computed for ``mle`` and ``hybrid``.
    limits : ParameterLimits, optional
        Parameter sampling limits.
    snr : (float, float)
        b = 0 SNR range.
    n_schemes : int
        Number of random schemes.
    seed : int
        Seed; equal arguments give identical data.
    d_par, d_iso : float
        Diffusivities, mm^2/s.
    n_threads : int, optional
        Threads of the compiled kernels.
    progress : bool, optional
        Progress bar over the schemes.

    Returns
    -------
    TrainingSet
        ``inputs`` are the features, shape (N, spec.n_features).
    """
    if labels not in LABEL_TYPES:
        raise ValueError(f"labels must be one of {LABEL_TYPES}, got {labels!r}")
    if n_samples < n_schemes:
        n_schemes = max(1, n_samples)
    limits = ParameterLimits() if limits is None else limits
    rng = np.random.default_rng(seed)
    truth = sample_parameters(n_samples, limits, rng)
    directions = random_directions(n_samples, rng)
    snr_values = sample_snr(n_samples, snr, rng, log_uniform=True)
    set_threads(n_threads)
    groups = np.array_split(np.arange(n_samples), n_schemes)
    features = np.empty((n_samples, spec.n_features), dtype=np.float32)
    mle = np.full((n_samples, 3), np.nan) if labels != "gt" else None
    keep = np.ones(n_samples, dtype=bool)
    LOGGER.info(
        "Synthesising %d samples on %d random schemes with shells b = %s (SNR %g-%g)%s",
        n_samples, n_schemes, "/".join(f"{b:g}" for b in spec.shells), *snr,
        ", with MLE labels" if mle is not None else "",
    )  # fmt: skip
    bar = tqdm(groups, desc="training data", unit="scheme", disable=no_bar(progress))
    for done, rows in enumerate(bar, start=1):
        scheme = random_scheme(spec, rng)
        clean = synthesise_signals(truth[rows], directions[rows], scheme, d_par, d_iso)
        noisy = add_rician_noise(clean, snr_values[rows], rng)
        normalised, valid = normalise_by_b0(noisy, scheme.b0_mask)
        features[rows] = design(scheme, spec).features(normalised)
        keep[rows] = valid
        if mle is not None:
            fitted, fitted_ok = mle_labels(
                noisy, truth[rows], directions[rows], snr_values[rows], scheme, d_par, d_iso,
                n_threads, progress=False,
            )  # fmt: skip
            mle[rows] = fitted
            keep[rows] &= fitted_ok
        if bar.disable and done % max(1, n_schemes // 4) == 0:
            LOGGER.info("Training data: %d of %d schemes done", done, n_schemes)
    if not keep.all():
        LOGGER.warning("Dropped %d of %d samples (invalid b = 0 or fit)", (~keep).sum(), keep.size)
    settings = {
        "n_samples": int(n_samples),
        "seed": int(seed),
        "limits": limits.to_dict(),
        "snr": [float(v) for v in snr],
        "snr_distribution": "log-uniform",
        "n_schemes": int(n_schemes),
        "max_tilt_degrees": MAX_TILT_DEGREES,
        "d_par": float(d_par),
        "d_iso": float(d_iso),
        "features": spec.to_dict(),
    }
    return TrainingSet(
        inputs=features[keep],
        truth=truth[keep].astype(np.float32),
        mle=None if mle is None else mle[keep].astype(np.float32),
        directions=directions[keep],
        snr=snr_values[keep],
        settings=settings,
    )
