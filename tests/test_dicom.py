"""DICOM export of NODDI maps: tags, geometry, UIDs and a dcm2niix round trip."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import nibabel as nb
import numpy as np
import pydicom
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from noddi_bids.io.dicom import (
    PLACEHOLDER_PATIENT_NAME,
    make_study_uid,
    patient_attributes_from_bids,
    quantise,
    write_parametric_map_series,
)

DCM2NIIX = shutil.which("dcm2niix")
needs_dcm2niix = pytest.mark.skipif(
    DCM2NIIX is None,
    reason="dcm2niix not installed (apt-get install dcm2niix); .ci/run installs it",
)


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    ax, ay, az = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(angles, zooms, origin, flip_x=False) -> np.ndarray:
    affine = np.eye(4)
    axes = np.diag(zooms).astype(float)
    if flip_x:  # a left-handed (radiological, LAS-like) voxel grid
        axes[0, 0] = -axes[0, 0]
    affine[:3, :3] = rotation(*angles) @ axes
    affine[:3, 3] = origin
    return affine


AFFINES = {
    "oblique": make_affine((20, -10, 30), (2.0, 2.5, 3.0), (-60.3, 20.7, 33.1)),
    "oblique-left-handed": make_affine((-7, 15, 100), (2.0, 2.5, 3.0), (80.2, -95.5, -40.0), True),
    "axial": make_affine((0, 0, 0), (1.75, 1.75, 2.5), (-90.0, -110.0, -60.0)),
}


def save_map(tmp_path, affine, shape=(7, 9, 5), seed=0, name="map.nii.gz"):
    rng = np.random.default_rng(seed)
    data = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    path = tmp_path / name
    nb.save(nb.Nifti1Image(data, affine), path)
    return path


def read_all_strict(files):
    """Read every instance and its pixels with pydicom, turning any warning into an error."""
    datasets = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in files:
            ds = pydicom.dcmread(path)
            ds.pixel_array  # noqa: B018 (decode the pixels too)
            datasets.append(ds)
    return datasets


def dcm2niix(series_dir, out_dir):
    """Convert a series with dcm2niix and return the single NIfTI it writes."""
    out_dir.mkdir()
    proc = subprocess.run(
        [DCM2NIIX, "-b", "n", "-z", "n", "-f", "roundtrip", "-o", str(out_dir), str(series_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = sorted(out_dir.glob("*.nii"))
    assert len(written) == 1, (written, proc.stdout)
    return nb.load(written[0])


def voxel_map(src_affine, out_affine, out_shape):
    """Integer voxel transform taking dcm2niix's voxel grid onto the source grid.

    dcm2niix may flip or permute voxel axes; the grids must otherwise coincide, so
    inv(src) @ out must be a signed permutation with an integer translation.
    """
    transform = np.linalg.inv(src_affine) @ out_affine
    rounded = np.rint(transform)
    assert_allclose(transform, rounded, atol=1e-4)
    perm = rounded[:3, :3]
    assert_array_equal(np.abs(perm).sum(axis=0), 1)
    assert_array_equal(np.abs(perm).sum(axis=1), 1)
    return rounded


def test_quantise_clips_rounds_and_zeroes_nan():
    values = np.array([np.nan, -0.2, 0.0, 0.0004, 0.0005001, 0.1234, 0.9996, 1.0, 1.7, np.inf])
    assert_array_equal(quantise(values), [0, 0, 0, 0, 1, 123, 1000, 1000, 1000, 0])
    assert quantise(values).dtype == np.uint16


def test_series_tags_and_uids(tmp_path):
    path = save_map(tmp_path, AFFINES["oblique"])
    study = make_study_uid("01", "A")
    files = write_parametric_map_series(
        path,
        tmp_path / "odi",
        parameter="od",
        estimator="nnmle",
        series_number=1001,
        study_uid=study,
    )
    assert [f.parent for f in files] == [tmp_path / "odi"] * 5
    datasets = read_all_strict(files)
    for k, ds in enumerate(datasets):
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.StudyInstanceUID == study
        assert ds.InstanceNumber == k + 1
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
            16,
            12,
            11,
            0,
        )
        assert float(ds.RescaleSlope) == 0.001 and float(ds.RescaleIntercept) == 0
        assert ds.SeriesDescription == "NODDI ODI NN-MLE"
        assert ds.SeriesNumber == 1001
        assert ds.ImageType[0] == "DERIVED"
        assert ds.pixel_array.max() <= 1000
        assert ds.PatientName == PLACEHOLDER_PATIENT_NAME
        assert "PLACEHOLDER" in ds.PatientComments
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert all(ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID for ds in datasets)
    assert all(len(ds.SOPInstanceUID) <= 64 for ds in datasets)


def test_stored_pixels_and_geometry_match_the_nifti(tmp_path):
    affine = AFFINES["oblique"]
    path = save_map(tmp_path, affine)
    img = nb.load(path)
    files = write_parametric_map_series(
        img,
        tmp_path / "s",
        parameter="icvf",
        estimator="mle",
        series_number=2,
        study_uid=make_study_uid("01"),
    )
    source = img.get_fdata()
    lps = np.diag([-1, -1, 1, 1]) @ img.affine
    for k, ds in enumerate(read_all_strict(files)):
        assert_array_equal(ds.pixel_array, quantise(source[:, :, k]).T)
        real = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.abs(real - source[:, :, k].T).max() <= 5e-4 + 1e-9
        # World (LPS) position of pixel (row r, column c) by the DICOM image-plane equation.
        row_cos = np.array(ds.ImageOrientationPatient[:3], dtype=float)
        col_cos = np.array(ds.ImageOrientationPatient[3:], dtype=float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        ipp = np.array(ds.ImagePositionPatient, dtype=float)
        for r, c in [(0, 0), (8, 0), (0, 6), (8, 6), (3, 4)]:
            dicom_xyz = ipp + c * dc * row_cos + r * dr * col_cos
            assert_allclose(dicom_xyz, (lps @ [c, r, k, 1])[:3], atol=1e-6)
    assert float(ds.SliceThickness) == pytest.approx(3.0, abs=1e-5)
    assert float(ds.SpacingBetweenSlices) == pytest.approx(3.0, abs=1e-5)


@needs_dcm2niix
@pytest.mark.parametrize("case", sorted(AFFINES))
def test_dcm2niix_round_trip(tmp_path, case):
    affine = AFFINES[case]
    path = save_map(tmp_path, affine, shape=(7, 9, 5) if case != "axial" else (24, 20, 6))
    img = nb.load(path)
    data = img.get_fdata()
    data[0, 0, 0] = np.nan  # out-of-range voxels follow the documented rules
    data[1, 0, 0] = -0.3
    data[2, 0, 0] = 1.4
    img = nb.Nifti1Image(data.astype(np.float32), img.affine)
    files = write_parametric_map_series(
        img,
        tmp_path / "dicom",
        parameter="isovf",
        estimator="nngt",
        series_number=7,
        study_uid=make_study_uid("01"),
    )
    read_all_strict(files)
    back = dcm2niix(tmp_path / "dicom", tmp_path / "nifti")
    assert sorted(back.shape) == sorted(img.shape)
    transform = voxel_map(img.affine, back.affine, back.shape)
    # Affine: every output voxel centre lies on the matching source voxel centre (1e-4 mm).
    out_index = np.indices(back.shape).reshape(3, -1)
    src_index = np.rint(transform[:3, :3] @ out_index + transform[:3, 3:]).astype(int)
    assert all((src_index[a] >= 0).all() and (src_index[a] < img.shape[a]).all() for a in range(3))
    world_out = back.affine[:3, :3] @ out_index + back.affine[:3, 3:]
    world_src = img.affine[:3, :3] @ src_index + img.affine[:3, 3:]
    world_error = np.abs(world_out - world_src).max()
    assert world_error < 1e-4
    assert_allclose(back.affine, img.affine @ transform, atol=1e-4)

    # Values: stored x 0.001 equals the source to three decimals (clipped, NaN -> 0).
    values = back.get_fdata().reshape(-1)
    source = data[tuple(src_index)]
    expected = np.clip(np.nan_to_num(source, nan=0.0), 0.0, 1.0)
    value_error = np.abs(values - expected).max()
    print(f"{case}: max world error {world_error:.1e} mm, max value error {value_error:.1e}")
    assert value_error <= 5e-4 + 1e-6
    assert_allclose(values, np.round(expected, 3), atol=1e-6)
    for index, value in [(0, 0.0), (1, 0.0), (2, 1.0)]:  # NaN -> 0, -0.3 -> 0, 1.4 -> 1
        at = (src_index[0] == index) & (src_index[1] == 0) & (src_index[2] == 0)
        assert_allclose(values[at], value, atol=1e-6)


def test_maps_of_one_session_share_study_and_frame(tmp_path):
    path = save_map(tmp_path, AFFINES["oblique"])
    study = make_study_uid("sub-01", "ses-A", dataset="demo")
    assert study == make_study_uid("01", "A", dataset="demo")
    assert study != make_study_uid("01", "B", dataset="demo")
    assert study != make_study_uid("01", "A", dataset="other")
    series = {}
    for number, param in enumerate(["od", "icvf", "isovf"], start=1):
        files = write_parametric_map_series(
            path,
            tmp_path / param,
            parameter=param,
            estimator="nnmle",
            series_number=number,
            study_uid=study,
        )
        series[param] = read_all_strict(files)
    first = [s[0] for s in series.values()]
    assert {ds.StudyInstanceUID for ds in first} == {study}
    assert len({ds.FrameOfReferenceUID for ds in first}) == 1
    assert len({ds.SeriesInstanceUID for ds in first}) == 3
    assert [ds.SeriesDescription for ds in first] == [
        "NODDI ODI NN-MLE",
        "NODDI NDI NN-MLE",
        "NODDI FWF NN-MLE",
    ]


def test_rewrite_is_reproducible_and_atomic(tmp_path):
    path = save_map(tmp_path, AFFINES["axial"])
    kwargs = dict(parameter="od", estimator="mle", series_number=3, study_uid=make_study_uid("9"))
    first = read_all_strict(write_parametric_map_series(path, tmp_path / "out", **kwargs))
    (tmp_path / "out" / "stale.txt").write_text("from an older run")
    files = write_parametric_map_series(path, tmp_path / "out", **kwargs)
    second = read_all_strict(files)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f.name for f in files)
    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in second]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nii.gz", "out"]  # no temp left


def test_bad_inputs_raise_actionable_errors(tmp_path):
    path = save_map(tmp_path, AFFINES["axial"])
    kwargs = dict(series_number=1, study_uid=make_study_uid("1"))
    with pytest.raises(ValueError, match="Unknown parameter"):
        write_parametric_map_series(path, tmp_path / "x", parameter="fa", estimator="mle", **kwargs)
    with pytest.raises(ValueError, match="Unsupported patient"):
        write_parametric_map_series(
            path, tmp_path / "x", parameter="od", estimator="mle", patient={"Name": "x"}, **kwargs
        )
    four_d = nb.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="3-D map"):
        write_parametric_map_series(
            four_d, tmp_path / "x", parameter="od", estimator="mle", **kwargs
        )
    assert not (tmp_path / "x").exists()


def test_patient_attributes_from_bids(tmp_path):
    sidecar = tmp_path / "sub-01_ses-A_dwi.json"
    sidecar.write_text(
        json.dumps(
            {
                "EchoTime": 0.083,
                "RepetitionTime": 5.8,
                "MagneticFieldStrength": 3,
                "ScanningSequence": "EP",
                "SequenceVariant": "SK_SP",
                "ScanOptions": "PFP_FS",
                "InstitutionName": "Somewhere Hospital",
                "PatientPosition": "HFS",
                "AcquisitionDateTime": "2024-05-06T10:11:12.500000",
            }
        )
    )
    participants = tmp_path / "participants.tsv"
    participants.write_text("participant_id\tage\tsex\nsub-01\t34.7\tF\nsub-02\t51\tM\n")
    attrs = patient_attributes_from_bids(sidecar, participants, subject="01", session="A")
    assert attrs["PatientID"] == "sub-01"
    assert attrs["PatientSex"] == "F" and attrs["PatientAge"] == "034Y"
    assert attrs["EchoTime"] == pytest.approx(83.0) and attrs["RepetitionTime"] == 5800
    assert attrs["SequenceVariant"] == ["SK", "SP"]
    assert (attrs["StudyDate"], attrs["StudyTime"]) == ("20240506", "101112.500000")
    assert attrs["StudyID"] == "A"
    assert "PatientName" not in attrs  # de-identified BIDS: left to the placeholder

    path = save_map(tmp_path, AFFINES["axial"])
    files = write_parametric_map_series(
        path,
        tmp_path / "s",
        parameter="od",
        estimator="nnmle",
        series_number=1,
        study_uid=make_study_uid("01", "A"),
        patient=attrs,
    )
    ds = read_all_strict(files)[0]
    assert ds.PatientID == "sub-01" and ds.PatientSex == "F" and ds.PatientAge == "034Y"
    assert ds.PatientName == PLACEHOLDER_PATIENT_NAME
    assert ds.PatientComments.startswith("PLACEHOLDER: PatientName")
    assert float(ds.EchoTime) == pytest.approx(83.0) and float(ds.MagneticFieldStrength) == 3
    assert list(ds.ScanOptions) == ["PFP", "FS"] and ds.PatientPosition == "HFS"
    assert ds.StudyDate == "20240506"

    named = patient_attributes_from_bids(
        {"PatientName": "DOE^JANE", "StudyInstanceUID": "1.2.3"}, subject="02"
    )
    assert named == {"PatientID": "sub-02", "PatientName": "DOE^JANE", "StudyInstanceUID": "1.2.3"}
    assert patient_attributes_from_bids(None, participants, subject="03") == {"PatientID": "sub-03"}


def test_nipype_interface(tmp_path, monkeypatch):
    from noddi_bids.interfaces.dicom import DicomMapSeries

    monkeypatch.chdir(tmp_path)
    path = save_map(tmp_path, AFFINES["oblique"])
    sidecar = tmp_path / "dwi.json"
    sidecar.write_text(json.dumps({"StudyInstanceUID": "1.2.826.0.1.3680043.2.1143.42"}))
    result = DicomMapSeries(
        in_file=str(path),
        parameter="icvf",
        estimator="nngt",
        series_number=12,
        subject="01",
        session="A",
        bids_sidecar=str(sidecar),
    ).run()
    out = result.outputs
    assert out.study_uid == "1.2.826.0.1.3680043.2.1143.42"  # joins the original study
    assert len(out.out_files) == 5 and out.out_dir.endswith("icvf_nngt")
    ds = read_all_strict(out.out_files)[0]
    assert ds.StudyInstanceUID == out.study_uid and ds.SeriesDescription == "NODDI NDI NN-GT"

    default = DicomMapSeries(
        in_file=str(path),
        parameter="od",
        estimator="mle",
        series_number=1,
        subject="01",
        out_dir=str(tmp_path / "plain"),
    ).run()
    assert default.outputs.study_uid == make_study_uid("01")


def test_run_export_writes_every_map_of_a_run(tmp_path, monkeypatch):
    from noddi_bids.interfaces.dicom import FIRST_SERIES_NUMBER, DicomRunExport

    monkeypatch.chdir(tmp_path)
    estimators = ["nnmle", "mle"]
    map_files = [
        {
            name: str(save_map(tmp_path, AFFINES["oblique"], seed=i, name=f"{desc}_{name}.nii.gz"))
            for i, name in enumerate(("odi", "ndi", "fwf", "direction"))
        }
        for desc in estimators
    ]  # fmt: skip
    out = DicomRunExport(
        estimators=estimators, map_files=map_files, subject="01", out_dir=str(tmp_path / "dicom")
    )
    result = out.run().outputs
    names = [Path(d).name for d in result.out_dirs]
    assert names == ["od_nnmle", "icvf_nnmle", "isovf_nnmle", "od_mle", "icvf_mle", "isovf_mle"]
    first = [read_all_strict(sorted(Path(d).glob("*.dcm")))[0] for d in result.out_dirs]
    assert [int(ds.SeriesNumber) for ds in first] == list(
        range(FIRST_SERIES_NUMBER, FIRST_SERIES_NUMBER + 6)
    )
    assert {ds.StudyInstanceUID for ds in first} == {result.study_uid}
    assert len({ds.SeriesInstanceUID for ds in first}) == 6


@pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy not installed (apt-get install dicom3tools); optional IOD check",
)
def test_dciodvfy_finds_no_errors(tmp_path):
    """David Clunie's IOD verifier: no errors (Rescale* are reported as standard extended)."""
    path = save_map(tmp_path, AFFINES["oblique"])
    files = write_parametric_map_series(
        path,
        tmp_path / "s",
        parameter="od",
        estimator="nnmle",
        series_number=1,
        study_uid=make_study_uid("01"),
        patient={"BodyPartExamined": "BRAIN", "PatientPosition": "HFS"},
    )
    for file in files[:2]:
        proc = subprocess.run(["dciodvfy", str(file)], capture_output=True, text=True, check=False)
        report = proc.stdout + proc.stderr
        assert "MRImage" in report
        assert not [line for line in report.splitlines() if line.startswith("Error")], report
