"""One vocabulary: every estimator label can be written as every output type."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from noddi_bids.interfaces.derivatives import WriteEstimate
from noddi_bids.interfaces.dicom import DicomRunExport
from noddi_bids.interfaces.tissue import TissueStats
from noddi_bids.io.bids import parse_entities
from noddi_bids.io.derivatives import map_path, sidecar_path
from noddi_bids.io.dicom import make_study_uid, write_parametric_map_series
from noddi_bids.model.scheme import reference_scheme
from noddi_bids.nn.synth import LABEL_TYPES
from noddi_bids.reports import write_participant_report
from noddi_bids.tissue.stats import TABLE_COLUMNS
from noddi_bids.vocabulary import (
    ESTIMATORS,
    MAPS,
    NETWORK_ESTIMATORS,
    PARAMETER_OF_LABEL,
    PARAMETERS,
    TISSUES,
    parameter,
)

SHAPE = (4, 5, 3)


def test_names_are_unique_and_networks_covered():
    for spellings in (
        [p.name for p in MAPS.values()],
        [p.label for p in MAPS.values()],
        [p.display for p in MAPS.values()],
        list(ESTIMATORS),
        [e.display for e in ESTIMATORS.values()],
        [e.dicom for e in ESTIMATORS.values()],
    ):
        assert len(set(spellings)) == len(spellings), spellings
    # every label type a network can be trained on has its estimator
    assert set(NETWORK_ESTIMATORS) == set(LABEL_TYPES)
    assert set(PARAMETERS) < set(MAPS)
    assert {parameter(p.label) for p in MAPS.values()} == {parameter(n) for n in MAPS}
    assert all(PARAMETER_OF_LABEL[MAPS[name].label] == name for name in MAPS)
    with pytest.raises(ValueError, match="Unknown parameter 'fa'"):
        parameter("fa")


@pytest.mark.parametrize("label", list(ESTIMATORS))
def test_every_estimator_in_every_output(label: str, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    estimator = ESTIMATORS[label]
    out, entities = tmp_path / "out", {"sub": "01"}
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    maps = {}
    for name in PARAMETERS:
        maps[f"{name}_file"] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(rng.uniform(size=SHAPE).astype(np.float32), affine),
                 maps[f"{name}_file"])  # fmt: skip
    masks = {}
    for index, tissue in enumerate(TISSUES):
        masks[tissue] = str(tmp_path / f"{tissue}.nii.gz")
        volume = (np.indices(SHAPE)[2] == index).astype(np.uint8)
        nib.save(nib.Nifti1Image(volume, affine), masks[tissue])

    # NIfTI derivatives: names and sidecars
    written = WriteEstimate(
        output_dir=str(out), entities=entities, sources=["bids:raw:sub-01/dwi/sub-01_dwi.nii.gz"],
        estimator=label, d_par=1.7e-3, d_iso=3e-3, details={}, scheme=reference_scheme(),
        n_nonfinite=0, n_nonpositive_b0=0, **maps,
    ).run().outputs.map_files  # fmt: skip
    assert sorted(written) == sorted(PARAMETERS)
    for name, path in written.items():
        assert Path(path) == map_path(out, entities, name, label)
        found = parse_entities(Path(path).name)
        assert (found["param"], found["desc"]) == (MAPS[name].label, label)
        sidecar = json.loads(sidecar_path(Path(path)).read_text())
        assert sidecar["Estimator"] == label
        assert sidecar["EstimatorDescription"] == estimator.description
        assert sidecar["Description"] == MAPS[name].description
        assert sidecar["Units"] == MAPS[name].units

    # tissue table rows
    stats = TissueStats(estimators=[label], map_files=[written], mask_files=masks).run()
    table = pd.read_csv(stats.outputs.stats_file, sep="\t")
    assert table["estimator"].tolist() == [label] * len(TISSUES)
    assert label in TABLE_COLUMNS["estimator"]["Description"]

    # DICOM series, one per scalar map
    dicom = DicomRunExport(
        estimators=[label], map_files=[written], subject="01", out_dir=str(tmp_path / "dicom")
    ).run()
    assert [Path(d).name for d in dicom.outputs.out_dirs] == [
        f"{MAPS[p].label}_{label}" for p in PARAMETERS
    ]
    for name, folder in zip(PARAMETERS, dicom.outputs.out_dirs, strict=True):
        first = sorted(Path(folder).iterdir())[0]
        assert first.name.startswith(f"{MAPS[name].display}_{estimator.dicom}_")
        description = pydicom.dcmread(first, stop_before_pixels=True).SeriesDescription
        assert description == f"NODDI {MAPS[name].display} {estimator.dicom}"

    # report label
    report = write_participant_report(out, "01").read_text()
    assert f"{estimator.display} (desc-{label})" in report
    assert estimator.words in report


def test_unknown_estimator_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="Unknown estimator 'nnfoo'"):
        map_path(tmp_path, {"sub": "01"}, "odi", "nnfoo")
    path = tmp_path / "map.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), path)
    with pytest.raises(ValueError, match="Unknown estimator 'nnfoo'"):
        write_parametric_map_series(path, tmp_path / "s", parameter="od", estimator="nnfoo",
                                    series_number=1, study_uid=make_study_uid("01"))  # fmt: skip
