"""``--dicom``: every map of a participant run becomes a DICOM series readable by pydicom."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pydicom
from conftest import make_bids_dataset

from noddi_bids.cli.run import main


def test_participant_run_writes_dicom_series(tmp_path, model_cache):
    phantom = make_bids_dataset(tmp_path / "bids")
    out, work = tmp_path / "out", tmp_path / "work"
    code = main([str(phantom.root), str(out), "participant", "-w", str(work), "--dicom"])
    assert code == 0
    series = sorted((out / "sub-01" / "dicom" / "sub-01").iterdir())
    assert [s.name for s in series] == ["icvf_nnmle", "isovf_nnmle", "od_nnmle"]
    assert "dicom" in (out / ".bidsignore").read_text().splitlines()
    source = np.asarray(
        nib.load(
            out / "sub-01" / "dwi" / "sub-01_model-noddi_param-od_desc-nnmle_dwimap.nii.gz"
        ).dataobj
    )
    files = sorted((out / "sub-01" / "dicom" / "sub-01" / "od_nnmle").glob("*.dcm"))
    assert len(files) == source.shape[2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = pydicom.dcmread(files[0])
    values = first.pixel_array.T * float(first.RescaleSlope)  # DICOM rows are the NIfTI's j axis
    expected = np.nan_to_num(source[..., 0], nan=0.0)
    assert first.SeriesDescription == "NODDI ODI NN-MLE"
    np.testing.assert_allclose(values, np.clip(expected, 0, 1), atol=5e-4 + 1e-9)
