"""Build-time check and cache warm-up of the noddi-bids container image.

1. The shipped networks exist (``noddi_bids.nn.store.shipped_models``).
2. The participant level runs end to end on a tiny synthetic dataset (reference protocol, NODDI
   signals with Rician noise) with the network and the MLE fit, and writes the three maps of each
   estimator. At build time this compiles any numba kernel ``noddi-bids-warmup`` did not into
   ``$NUMBA_CACHE_DIR`` and builds Matplotlib's font cache in ``$MPLCONFIGDIR``, so containers
   start warm; in a read-only container it runs on writable copies of those caches.

Run by the Dockerfile; also usable on any installation: ``python workflows/docker/smoke_test.py``.
Exits non-zero with a message if anything is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nb
import numpy as np

PARAMS = ("od", "icvf", "isovf")


def check_shipped_models() -> None:
    """Fail unless every shipped network file exists."""
    from noddi_bids.nn.store import shipped_models

    models = shipped_models()
    missing = [f"{name}: {path}" for name, path in models.items() if not path.is_file()]
    if not models or missing:
        sys.exit(f"smoke test: shipped networks missing: {missing or 'none declared'}")
    print(f"smoke test: shipped networks present: {', '.join(sorted(models))}")


def run_participant(root: Path) -> None:
    """Run the CLI on the dataset and check the maps of both estimators."""
    out = root / "out"
    cmd = [
        shutil.which("noddi-bids") or "noddi-bids",
        str(root / "bids"),
        str(out),
        "participant",
        "--skip-bids-validation",
        "--mle",
        "--nprocs",
        "1",
        "-w",
        str(root / "work"),
    ]
    print("smoke test:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    maps = sorted(out.rglob("*_model-noddi_param-*_dwimap.nii.gz"))
    names = {p.name for p in maps}
    for param in PARAMS:
        for desc in ("mle", "nn"):  # the MLE fit and a network (nnmle or nngt)
            if not any(f"param-{param}_desc-{desc}" in name for name in names):
                sys.exit(f"smoke test: no param-{param} desc-{desc}* map in {sorted(names)}")
    for path in maps:
        values = nb.load(path).get_fdata()
        if not np.isfinite(values).any():
            sys.exit(f"smoke test: {path.name} has no finite value")
    print(f"smoke test: {len(maps)} maps written", flush=True)


def warm_matplotlib() -> None:
    """Build Matplotlib's font cache in ``$MPLCONFIGDIR`` (reports draw figures)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager

    print(f"smoke test: Matplotlib font cache with {len(font_manager.fontManager.ttflist)} fonts")


def main() -> None:
    """Run the checks in a temporary folder that is removed afterwards."""
    import noddi_bids.cli  # noqa: F401 - the entry points' environment (writable caches)
    from noddi_bids.example.bids import make_block_dataset

    check_shipped_models()
    warm_matplotlib()
    with tempfile.TemporaryDirectory(prefix="noddi-bids-smoke-") as tmp:
        root = Path(tmp)
        make_block_dataset(root / "bids")
        run_participant(root)
    for var in ("NUMBA_CACHE_DIR", "MPLCONFIGDIR", "NODDI_BIDS_CACHE"):
        print(f"smoke test: {var}={os.environ.get(var, '(unset)')}")


if __name__ == "__main__":
    main()
