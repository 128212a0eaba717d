"""Shared fixtures: tiny generated BIDS datasets and a quickly trained network.

``make_bids_dataset(root, ...)`` writes a small block phantom (WM, GM and CSF blocks inside a
box of background noise) with the reference scheme; every option is a keyword so that other
test modules can reuse it. ``tiny_model`` trains a small real network (few samples and epochs)
once per session with the production training code and puts it in a private model cache, so
``--model auto`` finds it without training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")

from noddi_bids.example.bids import write_bids_dwi  # noqa: E402
from noddi_bids.model.noddi import noddi_signal  # noqa: E402
from noddi_bids.model.noise import add_rician_noise  # noqa: E402
from noddi_bids.model.scheme import Scheme, reference_scheme  # noqa: E402

#: Block phantom tissues: (ODI, NDI, FWF, S0), fibre along x.
PHANTOM_TISSUES = {
    "WM": (0.2, 0.7, 0.05, 800.0),
    "GM": (0.6, 0.4, 0.05, 1000.0),
    "CSF": (0.5, 0.5, 1.0, 1800.0),
}
#: A network training recipe small enough for tests (seconds): real code, not accuracy.
TINY_RECIPE = {"n_samples": 4096, "n_schemes": 16, "epochs": 3, "patience": 3, "seed": 0}
#: FreeSurfer label written for each phantom tissue in the SynthSeg-style label volume.
PHANTOM_LABELS = {"WM": 2, "GM": 3, "CSF": 24}


@dataclass
class Phantom:
    """A generated dataset: its root, dwi runs and ground truth."""

    root: Path
    dwi: list[Path] = field(default_factory=list)
    tissue: np.ndarray | None = None  # 0 background, 1 WM, 2 GM, 3 CSF
    affine: np.ndarray | None = None
    synthseg_dir: Path | None = None


def phantom_tissue(shape: Sequence[int]) -> np.ndarray:
    """Tissue index volume: an ellipsoid brain, WM in its x < centre half, GM in the other, and
    a CSF core."""
    index = np.indices(shape)
    centre = (np.asarray(shape) - 1) / 2
    radii = np.asarray(shape) / 2 - np.array([1.5, 1.5, 1.0])
    radius = sum(((index[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    tissue = np.zeros(shape, dtype=np.int8)
    tissue[radius <= 1] = 2
    tissue[(radius <= 1) & (index[0] < centre[0])] = 1
    tissue[radius <= 0.15] = 3
    return tissue


def phantom_dwi(
    tissue: np.ndarray, scheme: Scheme, snr: float, rng: np.random.Generator
) -> np.ndarray:
    """Noisy dwi data of a tissue index volume (background: noise only)."""
    data = np.zeros((tissue.size, scheme.n_measurements))
    flat = tissue.reshape(-1)
    for index, (odi, ndi, fwf, s0) in enumerate(PHANTOM_TISSUES.values(), start=1):
        rows = flat == index
        signal = noddi_signal(odi, ndi, fwf, [1.0, 0.0, 0.0], scheme.bvals, scheme.bvecs)
        data[rows] = s0 * signal
    noisy = add_rician_noise(data, snr, rng, s0=1000.0)
    return noisy.reshape(*tissue.shape, scheme.n_measurements)


def make_bids_dataset(
    root: Path,
    *,
    subjects: Sequence[str] = ("01",),
    sessions: Sequence[str | None] = (None,),
    runs: Sequence[dict[str, str]] = ({},),
    shape: Sequence[int] = (12, 12, 6),
    voxel_size: float = 2.5,
    scheme: Scheme | None = None,
    snr: float = 40.0,
    seed: int = 0,
    synthseg: str | None = None,
    synthseg_grid: str = "same",
    nan_voxels: int = 0,
) -> Phantom:
    """Write a block-phantom BIDS dataset.

    Parameters
    ----------
    root : Path
        Dataset root.
    subjects, sessions : sequence
        Labels (``None`` session: no session level).
    runs : sequence of dict
        Extra entities of each dwi run, e.g. ``({"acq": "a"}, {"acq": "b"})``.
    shape, voxel_size
        Grid of the dwi data (voxel size in mm).
    scheme : Scheme, optional
        Default: the reference scheme.
    snr : float
        SNR of a b = 0 signal of 1000.
    seed : int
        Random seed.
    synthseg : {None, "labels", "probseg", "posteriors"}
        Also write SynthSeg-style outputs in ``root/derivatives/synthseg``.
    synthseg_grid : {"same", "fine"}
        Grid of the SynthSeg outputs: the dwi grid or one twice as fine.
    nan_voxels : int
        Number of brain voxels whose data get a NaN (first run only).
    """
    root = Path(root)
    scheme = scheme or reference_scheme()
    rng = np.random.default_rng(seed)
    tissue = phantom_tissue(shape)
    affine = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = -voxel_size * (np.asarray(shape) - 1) / 2
    phantom = Phantom(root=root, tissue=tissue, affine=affine)
    for subject in subjects:
        for session in sessions:
            for extra in runs:
                data = phantom_dwi(tissue, scheme, snr, rng)
                if nan_voxels and not phantom.dwi:
                    inner = np.argwhere(tissue == 1)
                    inner = inner[np.argsort(np.abs(inner - inner.mean(0)).sum(1))][:nan_voxels]
                    data[tuple(inner.T)] = np.nan
                entities = {"sub": subject, **({"ses": session} if session else {}), **extra}
                phantom.dwi.append(
                    write_bids_dwi(root, entities, data, affine, scheme, dtype=np.float32)
                )
            if synthseg:
                phantom.synthseg_dir = write_synthseg(
                    root / "derivatives" / "synthseg", subject, session, tissue, affine,
                    synthseg, synthseg_grid,
                )  # fmt: skip
    return phantom


def write_synthseg(
    folder: Path,
    subject: str,
    session: str | None,
    tissue: np.ndarray,
    affine: np.ndarray,
    kind: str,
    grid: str,
) -> Path:
    """SynthSeg-style outputs of a tissue index volume (see :func:`make_bids_dataset`)."""
    from noddi_bids.tissue.synthseg import SYNTHSEG_POSTERIOR_LABELS

    if grid == "fine":
        tissue = np.repeat(np.repeat(np.repeat(tissue, 2, 0), 2, 1), 2, 2)
        fine = affine.copy()
        fine[:3, :3] = affine[:3, :3] / 2
        fine[:3, 3] = affine[:3, 3] - np.diag(affine)[:3] / 4
        affine = fine
    stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    anat = folder / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    (folder / "dataset_description.json").write_text(
        json.dumps({"Name": "synthseg", "BIDSVersion": "1.9.0", "DatasetType": "derivative"})
    )
    labels = np.zeros(tissue.shape, dtype=np.int16)
    for index, name in enumerate(PHANTOM_TISSUES, start=1):
        labels[tissue == index] = PHANTOM_LABELS[name]
    if kind == "labels":
        nib.save(nib.Nifti1Image(labels, affine), str(anat / f"{stem}_dseg.nii.gz"))
    elif kind == "probseg":
        for index, name in enumerate(PHANTOM_TISSUES, start=1):
            probability = (tissue == index).astype(np.float32)
            image = nib.Nifti1Image(probability, affine)
            nib.save(image, str(anat / f"{stem}_label-{name}_probseg.nii.gz"))
    elif kind == "posteriors":
        posteriors = np.stack(
            [(labels == label).astype(np.float32) for label in SYNTHSEG_POSTERIOR_LABELS], -1
        )
        image = nib.Nifti1Image(posteriors, affine)
        nib.save(image, str(anat / f"{stem}_synthseg_posteriors.nii.gz"))
    else:
        raise ValueError(f"unknown SynthSeg output kind {kind!r}")
    return folder


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """Compile the numba kernels once per test session, before the first test.

    A cold cache costs about a minute; here it is paid once (and saved to the cache, where the
    app's worker processes find it) instead of inside whichever test first fits a voxel.
    """
    from noddi_bids.cli.warmup import warm_up

    warm_up()


@pytest.fixture
def bids_dataset(tmp_path: Path) -> Phantom:
    """One participant, one run, no SynthSeg."""
    return make_bids_dataset(tmp_path / "bids")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real rotation-invariant network for the reference shells, in a private cache.

    Trained with the production code (``train_auto_model``) on 4096 samples for a few epochs:
    good enough to exercise the app, not for accuracy. Use ``model_cache`` to point the cache
    at it (``--model auto`` then finds it, or the shipped network of the same shells).
    """
    from noddi_bids.nn.features import FeatureSpec
    from noddi_bids.nn.store import CACHE_ENV, cached_model_path, train_auto_model

    cache = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(cache))
        spec = FeatureSpec.for_scheme(reference_scheme())
        target = cached_model_path(spec)
        train_auto_model(spec, target, n_threads=1, progress=False, recipe=TINY_RECIPE)
    return target


@pytest.fixture(scope="session")
def tiny_gm_model(tiny_model: Path) -> Path:
    """:func:`tiny_model` for grey-matter NODDI (d_par ``GM_D_PAR``), in the same cache folder."""
    from noddi_bids.model.noddi import GM_D_PAR
    from noddi_bids.nn.features import FeatureSpec
    from noddi_bids.nn.store import cached_model_path, train_auto_model

    spec = FeatureSpec.for_scheme(reference_scheme())
    target = cached_model_path(spec, GM_D_PAR, folder=tiny_model.parent)
    train_auto_model(spec, target, GM_D_PAR, n_threads=1, progress=False, recipe=TINY_RECIPE)
    return target


@pytest.fixture
def model_cache(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the model cache at :func:`tiny_model`'s folder for one test; returns the model."""
    from noddi_bids.nn.store import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tiny_model.parent.parent))
    return tiny_model


def make_qsiprep_dataset(
    root: Path, *, space: str = "T1w", brain_mask: bool = False, **options: object
) -> Phantom:
    """A QSIPrep-shaped derivative dataset of the block phantom.

    ``DatasetType: derivative``; per run ``..._space-<space>_desc-preproc_dwi.{nii.gz,bval,bvec,
    json}`` beside the files QSIPrep also writes there (``dwiref``, image QC table, confounds);
    with ``brain_mask`` the pipeline's ``..._space-<space>_desc-brain_mask.nii.gz`` (the phantom's
    WM block, so that it differs from the automatic mask); plus an ``anat`` folder and an HTML
    report, which must be ignored. ``options`` go to :func:`make_bids_dataset`.
    """
    phantom = make_bids_dataset(root, **options)
    (phantom.root / "dataset_description.json").write_text(
        json.dumps({"Name": "qsiprep output", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "qsiprep", "Version": "1.0.0"}]})  # fmt: skip
    )
    renamed = []
    for dwi in phantom.dwi:
        stem = dwi.name.removesuffix("_dwi.nii.gz")
        prefix = f"{stem}_space-{space}"
        for old in dwi.parent.glob(f"{stem}_dwi.*"):
            old.rename(old.with_name(f"{prefix}_desc-preproc_dwi{''.join(old.suffixes)}"))
        renamed.append(dwi.with_name(f"{prefix}_desc-preproc_dwi.nii.gz"))
        image = nib.load(renamed[-1])
        b0 = nib.Nifti1Image(np.asarray(image.dataobj)[..., 0], image.affine)
        nib.save(b0, str(dwi.with_name(f"{prefix}_dwiref.nii.gz")))
        (dwi.parent / f"{prefix}_desc-image_qc.tsv").write_text("raw_dimension_x\n12\n")
        confounds = dwi.parent / f"{stem}_desc-confounds_timeseries.tsv"
        confounds.write_text("framewise_displacement\n0\n")
        if brain_mask:
            mask = nib.Nifti1Image((phantom.tissue == 1).astype(np.uint8), image.affine)
            nib.save(mask, str(dwi.with_name(f"{prefix}_desc-brain_mask.nii.gz")))
        anat = dwi.parent.parent / "anat"
        anat.mkdir(exist_ok=True)
        nib.save(b0, str(anat / f"{stem.split('_')[0]}_desc-preproc_T1w.nii.gz"))
    (phantom.root / f"{phantom.dwi[0].name.split('_')[0]}.html").write_text("<html></html>")
    phantom.dwi = renamed
    return phantom


def check_table_precision(tsv: Path, decimals: int = 4) -> pd.DataFrame:
    """Check a written TSV: numbers with at most ``decimals`` decimals, every column described
    in the sidecar JSON of the same name, units on every mean and SD. Returns the table as text.
    """
    table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    for column in table.columns:
        for cell in table[column]:
            if cell.replace(".", "", 1).replace("-", "", 1).isdigit():
                assert len(cell.partition(".")[2]) <= decimals, f"{tsv.name} {column}: {cell}"
    sidecar = json.loads(tsv.with_suffix(".json").read_text())
    assert set(table.columns) <= set(sidecar), f"{tsv.name}: undescribed columns"
    for column in table.columns:
        if column.endswith(("mean", "sd")):
            assert sidecar[column]["Units"], f"{tsv.name} {column}: no units"
    return table
