"""``noddi-bids-warmup``: compile the fitter's, synthesis' and gradient check's numba kernels.

numba compiles the kernels on their first use (about a minute on two cores) and caches the
machine code next to the sources or in ``$NUMBA_CACHE_DIR``; every
later process loads it in about a second. Run this after installing (CI does, the container
image does at build time) so that no analysis pays the compilation.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

import numpy as np

LOGGER = logging.getLogger(__name__)


def warm_up() -> float:
    """Compile (or load from the cache) every kernel: fit, signal synthesis, gradient check.

    Fits a few synthetic voxels of the reference scheme from the grid search and from given
    parameters, synthesises their signals and checks their gradient table, which touches every
    compiled function; then makes a few samples of training data on random schemes, as
    ``--model auto`` does, whose tables reach the same kernels as arrays of other types
    (writable rather than read-only).

    Returns
    -------
    float
        Seconds taken (about a minute when compiling, about a second from the cache).
    """
    from noddi_bids.fit.mle import NoddiMLE
    from noddi_bids.model.scheme import reference_scheme
    from noddi_bids.nn.features import FeatureSpec
    from noddi_bids.nn.synth import make_invariant_training_set, synthesise_signals
    from noddi_bids.qc.gradients import check_gradient_table

    start = time.perf_counter()
    scheme = reference_scheme()
    truth = np.array([[0.3, 0.6, 0.1], [0.6, 0.4, 0.2], [0.5, 0.5, 0.9]])
    directions = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    signals = synthesise_signals(truth, directions, scheme)
    init = {"odi": truth[:, 0], "ndi": truth[:, 1], "fwf": truth[:, 2], "direction": directions}
    fitter = NoddiMLE(scheme)
    sigma = np.full(truth.shape[0], 0.05)
    fitter.fit(signals, sigma=sigma, progress=False)
    fitter.fit(signals, sigma=sigma, init=init, progress=False)
    make_invariant_training_set(FeatureSpec.for_scheme(scheme), 8, n_schemes=2, progress=False)
    check_gradient_table(signals, np.ones((3, 1, 1), bool), scheme, (2.0, 2.0, 2.0))
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``noddi-bids-warmup``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="noddi-bids-warmup",
        description="Compile the maximum-likelihood fitter's kernels once, so that no run pays "
        "the compilation (about a minute). Run once after installing.",
    )
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import numba

    seconds = warm_up()
    LOGGER.info(
        "noddi-bids kernels ready in %.1f s (cache: %s)",
        seconds,
        numba.config.CACHE_DIR or "next to the package sources",
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
