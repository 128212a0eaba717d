"""Rician magnitude noise: complex Gaussian noise on the signal, then the modulus."""

from __future__ import annotations

import numpy as np


def add_rician_noise(
    signal: np.ndarray, snr: float | np.ndarray, rng: np.random.Generator, s0: float = 1.0
) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise.

    Parameters
    ----------
    signal : ndarray, shape (N, M)
        Noise-free signal.
    snr : float or ndarray of shape (N,)
        Signal-to-noise ratio relative to the b = 0 signal ``s0``: sigma = s0 / snr per real and
        imaginary channel.
    rng : numpy.random.Generator
        Seeded generator (reproducibility).
    s0 : float
        b = 0 signal the SNR refers to (1 for normalised signals).

    Returns
    -------
    ndarray, shape (N, M)
        ``|signal + sigma (n1 + i n2)|`` with n1, n2 standard normal.
    """
    signal = np.asarray(signal, dtype=np.float64)
    sigma = s0 / np.asarray(snr, dtype=np.float64)
    if sigma.ndim:
        sigma = sigma.reshape(-1, *([1] * (signal.ndim - 1)))
    real = signal + sigma * rng.standard_normal(signal.shape)
    imaginary = sigma * rng.standard_normal(signal.shape)
    return np.hypot(real, imaginary)
