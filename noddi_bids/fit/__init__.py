"""Conventional NODDI fitting: batched Rician maximum likelihood (compiled kernels)."""

import os
import sys
import tempfile
from pathlib import Path


def _ensure_writable_numba_cache() -> None:
    """Point numba's kernel cache at a writable folder before the kernels are compiled.

    numba caches next to the sources or in ``NUMBA_CACHE_DIR``; in a read-only container image
    (Apptainer) neither may be writable, and numba then refuses to compile cached functions.
    Fall back to a per-user folder under the temporary directory.
    """
    configured = os.environ.get("NUMBA_CACHE_DIR")
    target = Path(configured) if configured else Path(__file__).parent
    if configured:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # not creatable: fall back below
    if os.access(target, os.W_OK):
        return
    fallback = Path(tempfile.gettempdir()) / f"noddi-bids-numba-{os.getuid()}"
    fallback.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(fallback)
    if "numba" in sys.modules:
        sys.modules["numba"].config.reload_config()


_ensure_writable_numba_cache()

from noddi_bids.fit.mle import NoddiFit, NoddiMLE, estimate_sigma  # noqa: E402 (after the cache set-up)

__all__ = ["NoddiFit", "NoddiMLE", "estimate_sigma"]
