"""Conventional NODDI fitting: batched Rician maximum likelihood (compiled kernels)."""

import os
import sys
from pathlib import Path

from noddi_bids.caches import writable_cache


def _ensure_writable_numba_cache() -> None:
    """Point numba's kernel cache at a writable folder before the kernels are compiled.

    numba caches next to the sources or in ``NUMBA_CACHE_DIR``, and uses neither unless it can
    write there; in a read-only container image (Apptainer) the image's warm cache is copied to
    a per-user folder under the temporary directory (:func:`noddi_bids.caches.writable_cache`).
    """
    configured = os.environ.get("NUMBA_CACHE_DIR")
    writable_cache("NUMBA_CACHE_DIR", "numba", default=Path(__file__).parent)
    if os.environ.get("NUMBA_CACHE_DIR") != configured and "numba" in sys.modules:
        sys.modules["numba"].config.reload_config()


_ensure_writable_numba_cache()

from noddi_bids.fit.mle import NoddiFit, NoddiMLE, estimate_sigma  # noqa: E402 (after the cache set-up)

__all__ = ["NoddiFit", "NoddiMLE", "estimate_sigma"]
