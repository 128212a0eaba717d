"""Accuracy of the default network against the MLE on the bundled example (docs/validation.md).

Usage: python benchmarks/example_accuracy.py [--work /tmp/noddi-example-accuracy] [--nprocs 2]

Makes the example phantom (``python -m noddi_bids.example make``) at SNR 20 (its default) and
40, with its default gradient table (the reference protocol as a motion-corrected subject has
it) and, at SNR 20, with the reference table itself and another well-spread direction set; runs
the participant level with ``--mle`` on each (with an empty network cache: the script checks
that the shipped network served every table and nothing was trained) and prints:

- per table and SNR, the mean absolute error against the truth of the network (NN_MLE) and the
  MLE in WM and GM (ODI, NDI, FWF) and CSF (FWF), from ``python -m noddi_bids.example compare``;
- the median angle between the network run's fibre direction and the MLE's in WM;
- the wall time of each participant run (network and MLE together).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def _args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/noddi-example-accuracy"))
    parser.add_argument("--nprocs", type=int, default=2)
    return parser.parse_args()


def _run(command, env):
    subprocess.run([str(c) for c in command], check=True, env=env, stdout=subprocess.DEVNULL)


def main():
    args = _args()
    from noddi_bids.example.compare import compare_with_truth

    # an empty cache: any network trained would land there
    env = {**os.environ, "NODDI_BIDS_CACHE": str(args.work / "empty-cache")}
    cases = [("motion", 20.0), ("motion", 40.0), ("reference", 20.0), ("other", 20.0)]
    print("| table | SNR | tissue | parameter | NN_MLE MAE | MLE MAE |")
    print("|---|---|---|---|---|---|")
    notes = []
    for table, snr in cases:
        root = args.work / f"{table}-snr{snr:g}"
        if not (root / "dataset_description.json").exists():
            _run([sys.executable, "-m", "noddi_bids.example", "make", root, "--snr", snr,
                  "--table", table], env)  # fmt: skip
        out = root / "derivatives" / "noddi"
        start = time.perf_counter()
        _run(["noddi-bids", root, out, "participant", "--synthseg-dir",
              root / "derivatives" / "synthseg", "-w", args.work / f"work-{table}-{snr:g}",
              "--mle", "--nprocs", args.nprocs], env)  # fmt: skip
        seconds = time.perf_counter() - start
        table_rows = compare_with_truth(root, out)
        for (tissue, parameter), group in table_rows.groupby(["tissue", "parameter"], sort=False):
            mae = dict(zip(group["estimator"], group["mae"], strict=True))
            print(f"| {table} | {snr:g} | {tissue} | {parameter} | {mae['nnmle']:.4f} | "
                  f"{mae['mle']:.4f} |")  # fmt: skip
        folder = out / "sub-01" / "dwi"

        def load(name, folder=folder):
            return np.asarray(nib.load(str(folder / name)).dataobj, dtype=np.float64)

        wm = load("sub-01_label-WM_mask.nii.gz") > 0
        nn = load("sub-01_model-noddi_param-direction_desc-nnmle_dwimap.nii.gz")[wm]
        mle = load("sub-01_model-noddi_param-direction_desc-mle_dwimap.nii.gz")[wm]
        cosine = np.clip(np.abs(np.sum(nn * mle, axis=1)), 0.0, 1.0)
        angle = np.median(np.degrees(np.arccos(cosine)))
        notes.append(f"{table}, SNR {snr:g}: median WM angle network vs MLE direction "
                     f"{angle:.2f} degrees; participant run {seconds:.1f} s")  # fmt: skip
    trained = sorted((args.work / "empty-cache").rglob("*.onnx"))
    notes.append(f"networks trained: {len(trained)} {[p.name for p in trained]}")
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
