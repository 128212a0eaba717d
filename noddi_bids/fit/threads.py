"""Threads of the fitter's and the signal synthesis' parallel (numba) kernels."""

from __future__ import annotations

import numba


def set_threads(n_threads: int | None) -> None:
    """Limit the number of threads of the parallel kernels (None: all cores)."""
    if n_threads:
        numba.set_num_threads(min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
