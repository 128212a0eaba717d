"""Goodness-of-fit maps: the out-of-model threshold and detection of corrupted data (docs/qc.md).

Usage: python benchmarks/fit_quality.py [--work /tmp/noddi-fit-quality] [--threads 2]
       [--figures docs/figures]

1. **Threshold.** The bundled example (``python -m noddi_bids.example make``) at SNR 15, 20 and
   30, and at SNR 20 with only 3 or 2 of its 9 b = 0 volumes: every voxel of the phantom's brain
   follows the model, so the ratio of NRMSE to the local noise level
   (:mod:`noddi_bids.qc.residuals`) there is what noise alone gives. Prints its quantiles for
   the network (every brain voxel) and the MLE (a random 12,000), and the share of these
   in-model voxels flagged at ratios 1.5 to 2.5.
2. **Detection.** The example at SNR 20 with a corrupted white-matter region (a ball of radius
   4 voxels, 12 mm, centred in deep white matter): a *spike* (two diffusion-weighted volumes
   raised by half the voxel's b = 0 signal), a *dropout* (four b = 2000 volumes at 30 % of
   their value, as through-plane motion does) or a *CSF-like* signal (free water with the
   CSF's b = 0, which the model can fit: a negative control). Prints, per estimator, the area
   under the ROC curve of NRMSE against the corrupted mask (negatives: every other voxel of the
   brain mask the app would compute, background voxels it includes too; the MLE is run on the
   ball and 12,000 other random voxels) and the share of the region flagged at each ratio.

With ``--figures`` it draws ``qc_fit_threshold.png`` (histograms of the ratio with the
threshold) and ``qc_fit_detection.png`` (NRMSE of a slice through each corrupted region).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from noddi_bids.example.bids import make_example
from noddi_bids.fit.mle import NoddiMLE
from noddi_bids.model.noddi import D_ISO, D_PAR
from noddi_bids.model.reference import normalise_dwi
from noddi_bids.model.scheme import Scheme, read_scheme
from noddi_bids.nn.features import fibre_direction
from noddi_bids.nn.infer import OnnxEstimator
from noddi_bids.nn.store import resolve_model
from noddi_bids.qc import residuals

SNRS = (15.0, 20.0, 30.0)
#: (SNR, b = 0 volumes kept: None for all nine) of the threshold measurement.
THRESHOLD_CASES = (*((snr, None) for snr in SNRS), (20.0, 6), (20.0, 5), (20.0, 3), (20.0, 2))
#: Out-of-model ratios compared.
SWEEP = (1.5, 1.75, 2.0, 2.5)
CORRUPTIONS = ("spike", "dropout", "csf-like")
RADIUS = 4
MLE_SAMPLE = 12_000


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/noddi-fit-quality"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--figures", type=Path, help="folder for the two PNG figures")
    return parser.parse_args()


def example(work: Path, snr: float) -> tuple[np.ndarray, nib.Nifti1Image, object, np.ndarray]:
    """Data, image, scheme and in-brain truth of the example at ``snr`` (made once)."""
    root = work / f"example-snr{snr:g}"
    dwi = root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz"
    if not dwi.is_file():
        make_example(root, snr=snr, progress=False)
    image = nib.load(dwi)
    scheme = read_scheme(dwi.with_suffix("").with_suffix(".bval"), dwi.with_name(
        "sub-01_dwi.bvec"))  # fmt: skip
    truth = root / "derivatives" / "truth" / "sub-01" / "dwi"
    odi = nib.load(truth / "sub-01_model-noddi_param-od_desc-truth_dwimap.nii.gz")
    return image.get_fdata(dtype=np.float32), image, scheme, np.asarray(odi.dataobj) > 0


def estimates(signals, scheme, mle_rows, threads):
    """{estimator: (parameters, directions, s0, rows)} of the network and the MLE."""
    network = OnnxEstimator(resolve_model("auto", scheme), n_threads=threads)
    everything = np.arange(signals.shape[0])
    found = {
        "nnmle": (
            network.predict(signals.astype(np.float32), scheme),
            fibre_direction(signals, scheme),
            np.ones(signals.shape[0]),
            everything,
        )
    }
    fit = NoddiMLE(scheme, n_threads=threads).fit(signals[mle_rows], progress=False)
    found["mle"] = (fit.parameters, fit.direction, fit.s0, mle_rows)
    return found


def qualities(data, scheme, threads, rng, mask=None, region=None):
    """Normalised signals and, per estimator, (rows, FitQuality) of one dataset.

    The network runs on every voxel of the mask (default: the app's automatic brain mask), the
    MLE on ``MLE_SAMPLE`` random voxels and every voxel of ``region``.
    """
    reference = normalise_dwi(data, scheme.b0_mask, mask)
    signals = reference.signals.astype(np.float64)
    noise = residuals.local_noise(signals, reference.mask, scheme.b0_mask)
    positive = np.flatnonzero(region[reference.mask]) if region is not None else np.array([], int)
    others = np.setdiff1d(np.arange(signals.shape[0]), positive)
    rows = np.union1d(positive, rng.choice(others, MLE_SAMPLE, replace=False))
    found = {}
    for name, (parameters, directions, s0, used) in estimates(
        signals, scheme, rows, threads
    ).items():
        predicted = residuals.predicted_signals(parameters, directions, s0, scheme, D_PAR, D_ISO)
        quality = residuals.fit_quality(
            signals[used],
            predicted,
            reference.mean_b0[reference.mask][used],
            noise[used],
            residuals.out_of_model_ratio(scheme.n_b0),
        )
        found[name] = (used, quality)
    return reference, found


def _subset(data, scheme, n_b0):
    """The data and scheme with only the first ``n_b0`` b = 0 volumes (None: all)."""
    if n_b0 is None:
        return data, scheme
    keep = ~scheme.b0_mask | (np.cumsum(scheme.b0_mask) <= n_b0)
    return data[..., keep], Scheme(scheme.bvals[keep], scheme.bvecs[keep])


def threshold(work, threads, rng):
    print("## In-model voxels (phantom brain): NRMSE / local noise level\n")
    print("| SNR | b = 0 volumes | estimator | voxels | median | 99 % | 99.9 % | max | "
          + " | ".join(f"flagged at {t:g}" for t in SWEEP) + " |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(SWEEP))
    histograms, notes = {}, []
    for snr, n_b0 in THRESHOLD_CASES:
        data, _, scheme, brain = example(work, snr)
        data, scheme = _subset(data, scheme, n_b0)
        reference, found = qualities(data, scheme, threads, rng)
        in_brain = brain[reference.mask]
        for name, (rows, quality) in found.items():
            ratio = (quality.nrmse / quality.noise)[in_brain[rows]]
            if n_b0 is None:
                histograms[(snr, name)] = ratio
            ratio = ratio[np.isfinite(ratio)]  # the MLE skips voxels without noise (2 b = 0)
            q = np.percentile(ratio, [50, 99, 99.9, 100])
            flagged = " | ".join(f"{100 * np.mean(ratio > t):.3f} %" for t in SWEEP)
            print(f"| {snr:g} | {scheme.n_b0} | {name} | {ratio.size} | {q[0]:.3f} | {q[1]:.3f} | "
                  f"{q[2]:.3f} | {q[3]:.3f} | {flagged} |")  # fmt: skip
        rows, quality = found["nnmle"]
        outside = ~in_brain[rows]
        notes.append(f"SNR {snr:g}, {scheme.n_b0} b = 0 volumes: {outside.sum()} voxels of the "
                     "automatic brain mask lie outside the phantom's brain (noise only); "
                     f"{quality.out_of_model[outside].sum()} of them are flagged out of model "
                     "by the network's fit.")  # fmt: skip
    print()
    for note in notes:
        print(f"- {note}")
    print()
    return histograms


def ball(brain_tissue: np.ndarray) -> np.ndarray:
    """Ball of radius RADIUS around the deepest white-matter voxel."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(brain_tissue)
    centre = np.unravel_index(np.argmax(depth), depth.shape)
    grid = np.indices(depth.shape)
    distance = np.sqrt(sum((grid[i] - centre[i]) ** 2 for i in range(3)))
    return distance <= RADIUS


def corrupt(data, scheme, region, kind, rng):
    """Copy of ``data`` with ``region`` corrupted (see the module docstring)."""
    data = data.copy()
    values = data[region]
    mean_b0 = values[:, scheme.b0_mask].mean(axis=1, keepdims=True)
    weighted = np.flatnonzero(~scheme.b0_mask)
    if kind == "spike":
        volumes = weighted[[10, 50]]
        values[:, volumes] += 0.5 * mean_b0
    elif kind == "dropout":
        volumes = np.flatnonzero(scheme.bvals > 1500)[[3, 17, 30, 44]]
        values[:, volumes] *= 0.3
    else:
        from noddi_bids.example.phantom import REFERENCE_S0, TISSUE_S0
        from noddi_bids.model.noise import add_rician_noise

        clean = TISSUE_S0["CSF"] * np.exp(-scheme.bvals * D_ISO)
        noise = REFERENCE_S0 / 20.0
        values = add_rician_noise(np.tile(clean, (values.shape[0], 1)), 1.0, rng, s0=noise)
    data[region] = values
    return data


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))
    n_pos, n_neg = positive.size, negative.size
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection(work, threads, rng):
    data, image, scheme, brain = example(work, 20.0)
    truth = work / "example-snr20" / "derivatives" / "truth" / "sub-01" / "dwi"
    wm = nib.load(truth / "sub-01_label-WM_desc-truth_probseg.nii.gz").get_fdata() > 0.9
    region = ball(wm) & brain
    mask = normalise_dwi(data, scheme.b0_mask).mask  # the app's automatic brain mask
    print(f"## Corrupted white-matter ball ({region.sum()} voxels), SNR 20\n")
    print("| corruption | estimator | AUC of NRMSE | AUC (phantom brain only) | "
          + " | ".join(f"region flagged at {t:g}" for t in SWEEP) + " | others flagged at "
          f"{residuals.out_of_model_ratio(scheme.n_b0):g} |")  # fmt: skip
    print("|---|---|---|---|" + "---|" * (len(SWEEP) + 1))
    slices = {}
    for kind in CORRUPTIONS:
        corrupted = corrupt(data, scheme, region, kind, rng)
        reference, found = qualities(corrupted, scheme, threads, rng, mask, region)
        positive_rows = region[reference.mask]
        in_brain = brain[reference.mask]
        for name, (rows, quality) in found.items():
            score = np.nan_to_num(quality.nrmse, nan=np.inf)
            positive = positive_rows[rows]
            both = auc(score[positive], score[~positive])
            inside = auc(score[positive], score[~positive & in_brain[rows]])
            ratio = quality.nrmse / quality.noise
            flagged = " | ".join(f"{100 * np.mean(ratio[positive] > t):.1f} %" for t in SWEEP)
            print(f"| {kind} | {name} | {both:.4f} | {inside:.4f} | {flagged} | "
                  f"{100 * quality.out_of_model[~positive].mean():.2f} % |")  # fmt: skip
            if name == "nnmle":
                volume = np.zeros(mask.shape)
                volume[reference.mask] = quality.nrmse
                slices[kind] = (volume, region)
    return slices


def figures(folder: Path, histograms, slices) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3))
    FigureCanvasAgg(figure)
    for column, name in enumerate(("nnmle", "mle")):
        axes = figure.add_subplot(1, 2, column + 1)
        for snr in SNRS:
            axes.hist(histograms[(snr, name)], bins=np.linspace(0.5, 2.5, 81), histtype="step",
                      density=True, label=f"SNR {snr:g}")  # fmt: skip
        axes.axvline(residuals.out_of_model_ratio(9), color="red", linestyle="--",
                     label="threshold (9 b = 0)")  # fmt: skip
        axes.set_title({"nnmle": "NN_MLE", "mle": "MLE"}[name])
        axes.set_xlabel("NRMSE / local noise level (in-model voxels)")
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(folder / "qc_fit_threshold.png", dpi=100)

    figure = Figure(figsize=(9, 3.2))
    FigureCanvasAgg(figure)
    for column, (kind, (volume, region)) in enumerate(slices.items()):
        centre = int(np.round(np.argwhere(region).mean(0)[2]))
        axes = figure.add_subplot(1, len(slices), column + 1)
        image = axes.imshow(volume[:, :, centre].T, origin="lower", vmin=0, vmax=0.2,
                            cmap="viridis")  # fmt: skip
        axes.contour(region[:, :, centre].T, levels=[0.5], colors="red", linewidths=0.8)
        axes.set_title(f"{kind}: NRMSE (NN_MLE)", fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.colorbar(image, ax=figure.axes, shrink=0.8)
    figure.savefig(folder / "qc_fit_detection.png", dpi=100)


def main() -> int:
    args = _args()
    args.work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    histograms = threshold(args.work, args.threads, rng)
    slices = detection(args.work, args.threads, rng)
    if args.figures:
        figures(args.figures, histograms, slices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
