"""Train the rotation-invariant networks shipped in ``noddi_bids/data/models/``.

One NN_MLE and one NN_GT network per shell set of :data:`noddi_bids.nn.store.SHIPPED_SHELLS`
(the reference 700/2000, 1000/2000, HCP-like 1000/2000/3000 and ABCD-like 500/1000/2000/3000
s/mm^2), with the recipe of ``--model auto`` (:data:`noddi_bids.nn.store.AUTO_RECIPE`: 2^18
samples over 256 random direction sets per shell set, b = 0 SNR 5-80, early stopping). Both
label types of a shell set see the same signals (same seed); only the labels differ.

The study's raw-signal networks of the reference scheme (``nn-*_reference.onnx``) are made by
``tools/train_shipped_models.sh``.

Usage::

    python tools/train_shipped_models.py                 # all shell sets, both label types
    python tools/train_shipped_models.py --shells 700 2000 --labels gt
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from pathlib import Path

from noddi_bids.nn.features import FeatureSpec
from noddi_bids.nn.store import SHIPPED_SHELLS, shipped_file_name, train_auto_model

OUT = Path(__file__).resolve().parents[1] / "noddi_bids" / "data" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shells", type=float, nargs="+", help="one shell set (default: all)")
    parser.add_argument("--labels", nargs="+", default=["mle", "gt"], choices=["mle", "gt"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    shell_sets = [tuple(args.shells)] if args.shells else SHIPPED_SHELLS
    for shells in shell_sets:
        spec = FeatureSpec(shells=shells)
        for labels in args.labels:
            target = args.out / shipped_file_name(spec, labels)
            start = time.perf_counter()
            train_auto_model(spec, target, labels=labels, n_threads=args.threads, progress=False)
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
            print(f"{target.name}: {time.perf_counter() - start:.0f} s, sha256 {digest}")


if __name__ == "__main__":
    main()
