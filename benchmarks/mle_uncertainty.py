"""Calibration and cost of the MLE's standard deviations (Fisher information; docs/qc.md).

Usage: python benchmarks/mle_uncertainty.py [--work /tmp/noddi-mle-uncertainty] [--threads 2]
       [--repeats 40] [--figure docs/figures/qc_mle_calibration.png]

1. **Figure-5 grid** (``noddi_bids.nn.evaluate``: ODI and NDI 0.05-0.95, FWF 0.05-0.45, fibre
   along x, reference protocol), ``--repeats`` noisy signals per grid point at SNR 15 and 30,
   fitted as the app does (grid search, then the Rician MLE) with the noise sigma known
   (1/SNR) and, as the app does, from each voxel's b = 0 volumes. Prints the share of voxels
   whose truth lies within +-1 reported SD, per parameter, over the whole grid and over its
   in-vivo part (ODI <= 0.65, NDI >= 0.25), and the share without an SD (singular).
2. **Example** (``python -m noddi_bids.example make --snr 15|30``): the app's brain mask and
   normalised signals, the fit and its SDs on every brain voxel, coverage against the truth in
   the phantom's white and grey matter (tissue fraction >= 0.9 and >= 0.8, as the masks).
3. **Cost**: fit and SDs of 20,000 voxels of the grid (SNR 15, sigma from b = 0), three times;
   the SDs' time over the fit's.

With ``--figure``: reported SD against the observed error spread (RMS error of the voxels in
each decile of reported SD), per parameter, for the grid and the example.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from noddi_bids.example.bids import make_example
from noddi_bids.fit.mle import NoddiMLE
from noddi_bids.model.reference import normalise_dwi
from noddi_bids.model.scheme import read_scheme, reference_scheme
from noddi_bids.nn.evaluate import evaluation_grid, simulate
from noddi_bids.vocabulary import MAPS, PARAMETERS

SNRS = (15.0, 30.0)
COST_VOXELS = 20_000


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/noddi-mle-uncertainty"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--figure", type=Path)
    return parser.parse_args()


def fitted(model, data, sigma):
    """Estimates (N, 3) and SDs (N, 3) of the fit as the app runs it."""
    fit = model.fit(data, sigma=sigma, progress=False)
    return fit.parameters, model.standard_deviations(data, fit, sigma=sigma)


def coverage(estimates, deviations, truth) -> np.ndarray:
    """Share within +-1 SD per parameter, over the voxels with an SD."""
    inside = np.abs(estimates - truth) <= deviations
    return np.array([np.mean(inside[np.isfinite(deviations[:, k]), k]) for k in range(3)])


def _row(label, found, extra=""):
    cells = " | ".join(f"{100 * c:.1f} %" for c in found)
    print(f"| {label} | {cells} |{extra}")


def grid_calibration(args, curves):
    scheme = reference_scheme()
    grid = evaluation_grid()
    model = NoddiMLE(scheme, n_threads=args.threads)
    vivo = (grid[:, 0] <= 0.65) & (grid[:, 1] >= 0.25)
    print("## Figure-5 grid: truth within +-1 reported SD\n")
    print("| SNR, sigma | voxels | ODI | NDI | FWF | in vivo: ODI | NDI | FWF | no SD |")
    print("|---|---|---|---|---|---|---|---|---|")
    for snr in SNRS:
        data = simulate(scheme, grid, args.repeats, snr, seed=int(snr))
        truth = np.repeat(grid, args.repeats, axis=0)
        region = np.repeat(vivo, args.repeats)
        for sigma, name in ((1.0 / snr, "known"), (None, "from b = 0")):
            estimates, deviations = fitted(model, data, sigma)
            whole = coverage(estimates, deviations, truth)
            part = coverage(estimates[region], deviations[region], truth[region])
            singular = np.mean(np.isnan(deviations).any(axis=1))
            cells = " | ".join(f"{100 * c:.1f} %" for c in (*whole, *part))
            print(f"| {snr:g}, {name} | {truth.shape[0]} | {cells} | {100 * singular:.2f} % |")
            if name != "known":
                curves[f"grid SNR {snr:g}"] = (estimates, deviations, truth)


def example_calibration(args, curves):
    print("\n## Example phantom (sigma from b = 0, as the app): truth within +-1 reported SD\n")
    print("| SNR | tissue | voxels | ODI | NDI | FWF | no SD |")
    print("|---|---|---|---|---|---|---|")
    for snr in SNRS:
        root = args.work / f"example-snr{snr:g}"
        dwi = root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
        if not dwi.is_file():
            make_example(root, snr=snr, progress=False)
        scheme = read_scheme(dwi.with_name("sub-01_dwi.bval"), dwi.with_name("sub-01_dwi.bvec"))
        image = nib.load(dwi)
        reference = normalise_dwi(image.get_fdata(dtype=np.float32), scheme.b0_mask)
        model = NoddiMLE(scheme, n_threads=args.threads)
        estimates, deviations = fitted(model, reference.signals, None)
        truth_dir = root / "derivatives" / "truth" / "sub-01" / "dwi"

        def truth_map(name, folder=truth_dir, mask=reference.mask):
            path = folder / f"sub-01_model-noddi_param-{name}_desc-truth_dwimap.nii.gz"
            return np.asarray(nib.load(path).dataobj, dtype=np.float64)[mask]

        truth = np.column_stack([truth_map(MAPS[p].label) for p in PARAMETERS])
        for tissue, threshold in (("WM", 0.9), ("GM", 0.8)):
            path = truth_dir / f"sub-01_label-{tissue}_desc-truth_probseg.nii.gz"
            rows = np.asarray(nib.load(path).dataobj)[reference.mask] >= threshold
            found = coverage(estimates[rows], deviations[rows], truth[rows])
            singular = np.mean(np.isnan(deviations[rows]).any(axis=1))
            cells = " | ".join(f"{100 * c:.1f} %" for c in found)
            print(f"| {snr:g} | {tissue} | {rows.sum()} | {cells} | {100 * singular:.2f} % |")
        brain = truth_map("od") > 0
        curves[f"example SNR {snr:g}"] = (estimates[brain], deviations[brain], truth[brain])


def cost(args):
    scheme = reference_scheme()
    rng = np.random.default_rng(0)
    grid = evaluation_grid()
    data = simulate(scheme, grid[rng.integers(0, grid.shape[0], COST_VOXELS)], 1, 15.0, seed=1)
    model = NoddiMLE(scheme, n_threads=args.threads)
    fitted(model, data[:100], None)  # compiled
    ratios = []
    for _ in range(3):
        start = time.perf_counter()
        fit = model.fit(data, progress=False)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        model.standard_deviations(data, fit)
        sd_seconds = time.perf_counter() - start
        ratios.append(sd_seconds / fit_seconds)
        print(f"- fit {fit_seconds:.2f} s, SDs {sd_seconds:.3f} s: {100 * ratios[-1]:.1f} % of the "
              "fit")  # fmt: skip
    print(f"\nCost of the SDs ({COST_VOXELS} voxels, {args.threads} threads): median "
          f"{100 * np.median(ratios):.1f} % of the fit.")  # fmt: skip


def figure(path: Path, curves) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.4))
    FigureCanvasAgg(figure)
    for column, name in enumerate(PARAMETERS):
        axes = figure.add_subplot(1, 3, column + 1)
        top = 0.0
        for label, (estimates, deviations, truth) in curves.items():
            sd, error = deviations[:, column], estimates[:, column] - truth[:, column]
            keep = np.isfinite(sd)
            edges = np.quantile(sd[keep], np.linspace(0, 1, 11))
            reported, observed = [], []
            for low, high in zip(edges[:-1], edges[1:], strict=True):
                chosen = keep & (sd >= low) & (sd <= high)
                reported.append(np.median(sd[chosen]))
                observed.append(np.sqrt(np.mean(error[chosen] ** 2)))
            axes.plot(reported, observed, marker="o", markersize=3, label=label)
            top = max(top, max(reported), max(observed))
        axes.plot([0, top], [0, top], color="black", linestyle="--", linewidth=0.8)
        axes.set_title(MAPS[name].display)
        axes.set_xlabel("reported SD (decile median)")
        axes.set_ylabel("observed RMS error")
        if column == 0:
            axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> int:
    args = _args()
    args.work.mkdir(parents=True, exist_ok=True)
    curves: dict[str, tuple] = {}
    grid_calibration(args, curves)
    example_calibration(args, curves)
    print("\n## Cost\n")
    cost(args)
    if args.figure:
        figure(args.figure, curves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
