"""The inline DICOM node against a real Orthanc PACS, fed by dcmtk's storescu and by Orthanc.

One node (in this process) and one Orthanc serve the module: each test sends its own series and
waits for its outcome. The phantom series are small (12 x 12 x 6 voxels, 81 volumes) and the
idle timeout short, so the module runs in well under a minute. Skipped, with the reason, only
when Orthanc or dcmtk is not installed (``.ci/run`` installs both).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import phantom_dwi, phantom_tissue
from pacs import LocalOrthanc, free_port, storescu, wait_for, why_unavailable
from pydicom.uid import MRImageStorage, SecondaryCaptureImageStorage

from noddi_bids.cli.run import main as app_main
from noddi_bids.example.bids import write_bids_dwi
from noddi_bids.example.dicom import PHANTOM_PATIENT, write_dwi_series
from noddi_bids.model.scheme import Scheme, reference_scheme
from noddi_bids.node.config import Destination, NodeConfig
from noddi_bids.node.server import Node, run_once

pytestmark = pytest.mark.skipif(why_unavailable() is not None, reason=str(why_unavailable()))

SHAPE = (10, 10, 4)
SMALL_SHAPE = (8, 8, 3)
VOXEL_MM = 2.5
IDLE_S = 1.0
#: Decoded map values against the app's: the 1/1000 quantisation plus float rounding.
VALUE_ATOL = 5e-4 + 1e-6
GEOMETRY_ATOL_MM = 1e-4
MAPS = {"odi": "od", "ndi": "icvf", "fwf": "isovf"}


def oblique_affine(shape=SHAPE, angle_deg: float = 20.0) -> np.ndarray:
    angle = np.deg2rad(angle_deg)
    rotation = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation * VOXEL_MM
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def phantom_data(shape=SHAPE, scheme: Scheme | None = None, seed: int = 0) -> np.ndarray:
    scheme = scheme or reference_scheme()
    data = phantom_dwi(phantom_tissue(shape), scheme, 40.0, np.random.default_rng(seed))
    return np.clip(np.rint(data), 0, 32767)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with LocalOrthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """The phantom as a BIDS run (with the app's maps) and as classic and Enhanced MR series."""
    root = tmp_path_factory.mktemp("node-phantom")
    scheme = reference_scheme()
    data, affine = phantom_data(), oblique_affine()
    write_bids_dwi(root / "bids", {"sub": "01"}, data, affine, scheme, dtype=np.int16)
    out = root / "derivatives"
    assert app_main([str(root / "bids"), str(out), "participant", "-w", str(root / "work")]) == 0
    maps = {
        name: nib.load(
            out / "sub-01" / "dwi" / f"sub-01_model-noddi_param-{param}_desc-nnmle_dwimap.nii.gz"
        )
        for name, param in MAPS.items()
    }
    classic = write_dwi_series(
        root / "classic", data, affine, scheme.bvals, scheme.bvecs, series_number=7
    )
    enhanced = write_dwi_series(
        root / "enhanced",
        data,
        affine,
        scheme.bvals,
        scheme.bvecs,
        enhanced=True,
        series_number=8,
    )
    return SimpleNamespace(
        root=root,
        scheme=scheme,
        data=data,
        affine=affine,
        maps=maps,
        classic=classic,
        enhanced=enhanced,
    )


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small valid series (8 x 8 x 3 voxels, 243 instances) that the fault tests spoil."""
    shape, scheme = SMALL_SHAPE, reference_scheme()
    folder = tmp_path_factory.mktemp("small") / "dwi"
    return write_dwi_series(
        folder,
        phantom_data(shape),
        oblique_affine(shape),
        scheme.bvals,
        scheme.bvecs,
        series_number=12,
    )


@pytest.fixture(scope="module")
def node(tmp_path_factory, orthanc):
    """A running node sending to the Orthanc; AE titles STORESCU and ORTHANC allowed."""
    config = NodeConfig(
        ae_title="NODDI",
        host="127.0.0.1",
        port=free_port(),
        allowed_calling_aets=("STORESCU", "ORTHANC"),
        idle_timeout_s=IDLE_S,
        spool_dir=tmp_path_factory.mktemp("spool"),
        threads=1,
        destinations=(Destination("pacs", orthanc.ae_title, "127.0.0.1", orthanc.dicom_port),),
        retries=1,
        retry_delay_s=0.2,
        archive_dir=tmp_path_factory.mktemp("archive"),
    )
    node = Node(config)
    node.start()
    orthanc.add_modality("noddi", config.ae_title, config.port)
    yield node
    node.stop()


def sent(node: Node, series_uid: str, timeout: float = 60.0) -> bool:
    return bool(wait_for(lambda: (series_uid, "pacs") in node.outbox.sent_at, timeout))


def failed_reason(node: Node, series_uid: str, timeout: float = 30.0) -> str | None:
    def find():
        for record in node.spool.path("failed").glob(f"{series_uid}-*/reason.json"):
            return json.loads(record.read_text())["reason"]
        return None

    return wait_for(find, timeout)


def source_header(files: list[Path]) -> pydicom.Dataset:
    return pydicom.dcmread(files[0], stop_before_pixels=True)


def map_series(orthanc: LocalOrthanc, source: pydicom.Dataset) -> dict[str, list[pydicom.Dataset]]:
    """The node's series for a source series, by SeriesNumber (source x 100 + 1..4)."""
    first = int(source.SeriesNumber) * 100 + 1
    names = dict(zip(range(first, first + 4), ("odi", "ndi", "fwf", "direction"), strict=True))
    found = {}
    for series in orthanc.series():
        number = int(series["MainDicomTags"].get("SeriesNumber", 0))
        if number in names:
            files = orthanc.instance_files(series["ID"])
            datasets = [pydicom.dcmread(__import__("io").BytesIO(f)) for f in files]
            if datasets[0].StudyInstanceUID == source.StudyInstanceUID:
                found[names[number]] = sorted(datasets, key=lambda d: int(d.InstanceNumber))
    return found


def pixel_positions(ds: pydicom.Dataset) -> np.ndarray:
    """RAS world positions (mm) of every pixel of an instance, shape (Columns, Rows, 3)."""
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    row_spacing, col_spacing = map(float, ds.PixelSpacing)
    i, j = np.meshgrid(np.arange(ds.Columns), np.arange(ds.Rows), indexing="ij")
    lps = (np.asarray(ds.ImagePositionPatient, dtype=float)
           + i[..., None] * col_spacing * orientation[:3]
           + j[..., None] * row_spacing * orientation[3:])  # fmt: skip
    return lps * np.array([-1.0, -1.0, 1.0])


def check_against_app(series: list[pydicom.Dataset], reference: nib.Nifti1Image) -> None:
    """Decoded values equal the app's map within VALUE_ATOL, pixel for pixel, at the same place."""
    values = np.nan_to_num(np.asarray(reference.dataobj, dtype=float))
    inverse = np.linalg.inv(reference.affine)
    assert len(series) == values.shape[2]
    seen = np.zeros(values.shape, bool)
    for ds in series:
        world = pixel_positions(ds).reshape(-1, 3)
        index = world @ inverse[:3, :3].T + inverse[:3, 3]
        voxel = np.rint(index).astype(int)
        back = voxel @ reference.affine[:3, :3].T + reference.affine[:3, 3]
        np.testing.assert_allclose(back, world, atol=GEOMETRY_ATOL_MM)
        decoded = ds.pixel_array.T.reshape(-1) * float(ds.RescaleSlope)
        expected = np.clip(values[tuple(voxel.T)], 0, 1)
        np.testing.assert_allclose(decoded, expected, atol=VALUE_ATOL)
        seen[tuple(voxel.T)] = True
    assert seen.all()


def check_maps(orthanc, source_files, phantom) -> dict[str, list[pydicom.Dataset]]:
    source = source_header(source_files)
    found = map_series(orthanc, source)
    assert sorted(found) == ["direction", "fwf", "ndi", "odi"]
    for name, series in found.items():
        first = series[0]
        assert first.StudyInstanceUID == source.StudyInstanceUID
        assert first.SeriesInstanceUID != source.SeriesInstanceUID
        assert first.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert first.PatientID == PHANTOM_PATIENT["PatientID"]
        related = first.RelatedSeriesSequence[0]
        assert related.SeriesInstanceUID == source.SeriesInstanceUID
        assert first.SeriesDescription.startswith("NODDI ")
        assert first.SeriesDescription.endswith(f"of {source.SeriesDescription}")
        if name == "direction":
            assert first.SOPClassUID == SecondaryCaptureImageStorage
            assert first.PhotometricInterpretation == "RGB"
        else:
            assert first.SOPClassUID == MRImageStorage
            assert float(first.RescaleSlope) == pytest.approx(0.001)
            check_against_app(series, phantom.maps[name])
    return found


def test_dcm2niix_recovers_the_scheme(phantom, tmp_path):
    from noddi_bids.io.dicom import bvecs_to_patient
    from noddi_bids.model.scheme import read_scheme
    from noddi_bids.node.convert import convert_series

    truth = bvecs_to_patient(phantom.scheme.bvecs, phantom.affine)[~phantom.scheme.b0_mask]
    for name in ("classic", "enhanced"):
        folder = getattr(phantom, name)[0].parent
        converted = convert_series(folder, tmp_path / name)
        scheme = read_scheme(converted.bval, converted.bvec)
        np.testing.assert_array_equal(scheme.bvals, phantom.scheme.bvals)
        image = nib.load(converted.image)
        got = bvecs_to_patient(scheme.bvecs, image.affine)[~scheme.b0_mask]
        np.testing.assert_allclose(np.abs(np.sum(got * truth, axis=1)), 1.0, atol=1e-4)


def test_classic_series_from_storescu(node, orthanc, phantom):
    result = storescu(phantom.classic[0].parent, node.config.port, "NODDI")
    assert result.returncode == 0, result.stderr
    uid = source_header(phantom.classic).SeriesInstanceUID
    assert sent(node, uid)
    found = check_maps(orthanc, phantom.classic, phantom)
    # Fibres run along x (left-right): red dominates in the white-matter block's pixels.
    tissue = phantom_tissue(SHAPE)
    wm = tissue[:, :, 2].T == 1  # rows of an instance run along the second voxel axis
    rgb = found["direction"][2].pixel_array.astype(int)[wm]
    lit = rgb.sum(axis=1) > 0  # in the brain mask
    assert lit.mean() > 0.5
    assert np.all(rgb[lit, 0] > 5 * rgb[lit, 1:].max(axis=1))
    archived = sorted(node.config.archive_dir.rglob("*_dwimap.nii.gz"))
    assert len(archived) == 4 and (node.config.archive_dir / "dataset_description.json").is_file()


def test_enhanced_series_routed_by_orthanc(node, orthanc, phantom):
    (series_id,) = orthanc.upload(phantom.enhanced[0].parent)
    orthanc.send("noddi", [series_id])
    uid = source_header(phantom.enhanced).SeriesInstanceUID
    assert sent(node, uid)
    check_maps(orthanc, phantom.enhanced, phantom)


def rewrite_series(files, folder: Path, tag: str, edit=None) -> list[Path]:
    """Copy a series under a new SeriesInstanceUID (and SOP Instance UIDs), editing each file."""
    from noddi_bids.io.dicom import generate_uid

    folder.mkdir(parents=True)
    series_uid = generate_uid("test-series", tag)
    written = []
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(tag, index)
        if edit is not None:
            edit(ds)
        written.append(folder / f"{index:05d}.dcm")
        ds.save_as(written[-1])
    return written


def uid_of(files) -> str:
    return str(source_header(files).SeriesInstanceUID)


def test_disallowed_calling_aet_is_rejected(node, phantom):
    result = storescu(phantom.classic[:1], node.config.port, "NODDI", calling="INTRUDER")
    assert result.returncode != 0
    assert "calling ae title not recognized" in (result.stdout + result.stderr).lower()


def test_non_diffusion_series_is_ignored(node, phantom, tmp_path, caplog):
    def strip(ds):
        for keyword in (
            "DiffusionBValue",
            "DiffusionDirectionality",
            "DiffusionGradientOrientation",
        ):
            if keyword in ds:
                delattr(ds, keyword)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
        ds.ImagesInAcquisition = 6

    files = rewrite_series(phantom.classic[:6], tmp_path / "t2", "t2", strip)
    ignored = node.counts["ignored"]
    caplog.set_level(logging.INFO)
    assert storescu(files, node.config.port, "NODDI").returncode == 0
    assert wait_for(lambda: node.counts["ignored"] > ignored, 20)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("noddi_bids.node")]
    assert any(uid_of(files) in m and "not diffusion" in m for m in messages)
    assert not any(PHANTOM_PATIENT["PatientName"].split("^")[0] in m for m in messages)


def test_incomplete_series_kept_without_maps(node, small, tmp_path):
    files = rewrite_series(small[:-4], tmp_path / "short", "short")
    assert storescu(files, node.config.port, "NODDI").returncode == 0
    reason = failed_reason(node, uid_of(files))
    assert reason == "incomplete: 239 of 243 instances announced arrived"
    (kept,) = node.spool.path("failed").glob(f"{uid_of(files)}-*")
    assert len(list(kept.glob("*.dcm"))) == 239
    assert (uid_of(files), "pacs") not in node.outbox.sent_at


def test_malformed_instance_refused(node, small, tmp_path):
    def cut(ds):
        if ds.InstanceNumber == 100:
            ds.PixelData = ds.PixelData[:-64]

    files = rewrite_series(small, tmp_path / "cut", "cut", cut)
    storescu(files, node.config.port, "NODDI")
    assert failed_reason(node, uid_of(files)) == "1 instance(s) were refused as malformed"
    assert node._server is not None and node._server.socket is not None  # still serving


def test_truncated_file_in_a_folder(small, tmp_path):
    files = rewrite_series(small, tmp_path / "in", "truncated")
    data = files[50].read_bytes()
    files[50].write_bytes(data[:-100])  # cut inside the pixel data
    config = NodeConfig(spool_dir=tmp_path / "unused", threads=1)
    assert run_once(tmp_path / "in", tmp_path / "out", config) == 1
    record = json.loads((tmp_path / "out" / "failed" / f"{uid_of(files)}.json").read_text())
    assert record["reason"] == "1 instance(s) were refused as malformed"
    assert not (tmp_path / "out" / uid_of(files)).exists()


def test_unreadable_b_values(node, small, tmp_path):
    def blank(ds):
        ds.DiffusionBValue = None
        if "DiffusionGradientOrientation" in ds:
            del ds.DiffusionGradientOrientation

    files = rewrite_series(small, tmp_path / "nob", "nob", blank)
    assert storescu(files, node.config.port, "NODDI").returncode == 0
    reason = failed_reason(node, uid_of(files))
    assert "b-value" in reason, reason


def test_single_shell_series(node, tmp_path):
    rng = np.random.default_rng(3)
    bvecs = rng.standard_normal((23, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    bvals = np.r_[np.zeros(3), np.full(20, 1000.0)]
    shape = (10, 10, 3)
    table = SimpleNamespace(bvals=bvals, bvecs=bvecs, n_measurements=bvals.size)
    data = phantom_dwi(phantom_tissue(shape), table, 40.0, rng)
    files = write_dwi_series(
        tmp_path / "single", data, oblique_affine(shape), bvals, bvecs, series_number=11
    )
    assert storescu(files, node.config.port, "NODDI").returncode == 0
    reason = failed_reason(node, uid_of(files))
    assert "NODDI needs at least two non-zero b-shells" in reason, reason


def test_series_mixing_two_acquisitions(node, phantom, small, tmp_path):
    from noddi_bids.node.convert import ConversionError, convert_series

    shape = (8, 10, 3)
    other = write_dwi_series(
        tmp_path / "other",
        phantom_data(shape, seed=5),
        oblique_affine(shape),
        phantom.scheme.bvals,
        phantom.scheme.bvecs,
        series_number=7,
    )
    files = rewrite_series(small + other, tmp_path / "mixed", "mixed")
    storescu(tmp_path / "mixed", node.config.port, "NODDI")
    reason = failed_reason(node, uid_of(files))
    assert reason.startswith("the series mixes 2 acquisitions"), reason
    with pytest.raises(ConversionError, match="mixes 2 acquisitions"):
        convert_series(tmp_path / "mixed", tmp_path / "converted")


def test_two_patients_at_once(node, orthanc, phantom, tmp_path):
    series = {}
    for label, shape, seed in (("A", (10, 8, 3), 1), ("B", (8, 10, 3), 2)):
        patient = {"PatientName": f"PATIENT^{label}", "PatientID": f"ID-{label}"}
        series[label] = write_dwi_series(
            tmp_path / label,
            phantom_data(shape, seed=seed),
            oblique_affine(shape),
            phantom.scheme.bvals,
            phantom.scheme.bvecs,
            patient=patient,
            series_number=5,
        )
    senders = [
        subprocess.Popen(
            [
                str(__import__("pacs").dcmtk_tool("storescu")),
                "-aet",
                "STORESCU",
                "-aec",
                "NODDI",
                "+sd",
                "-nh",
                "127.0.0.1",
                str(node.config.port),
                str(files[0].parent),
            ],
            env=__import__("pacs").NODELAY_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for files in series.values()
    ]
    assert [sender.wait(timeout=60) for sender in senders] == [0, 0]
    for label, files in series.items():
        assert sent(node, uid_of(files))
        once = tmp_path / f"once-{label}"
        assert run_once(files[0].parent, once, NodeConfig(spool_dir=tmp_path, threads=1)) == 0
        found = map_series(orthanc, source_header(files))
        assert sorted(found) == ["direction", "fwf", "ndi", "odi"]
        for name in ("odi", "ndi", "fwf"):
            assert {ds.PatientID for ds in found[name]} == {f"ID-{label}"}
            alone = sorted(
                (pydicom.dcmread(p) for p in (once / uid_of(files) / name).glob("*.dcm")),
                key=lambda d: int(d.InstanceNumber),
            )
            for got, expected in zip(found[name], alone, strict=True):
                np.testing.assert_array_equal(got.pixel_array, expected.pixel_array)


def test_destination_down_goes_to_dead_letter(tmp_path, phantom, caplog):
    config = NodeConfig(
        ae_title="NODDI2", host="127.0.0.1", port=free_port(), idle_timeout_s=0.5,
        spool_dir=tmp_path / "spool", threads=1, retries=2, retry_delay_s=0.1,
        destinations=(Destination("down", "NOBODY", "127.0.0.1", free_port()),),
        send_timeout_s=2,
    )  # fmt: skip
    node = Node(config)
    node.start()
    caplog.set_level(logging.INFO)
    try:
        shape = SMALL_SHAPE
        files = write_dwi_series(
            tmp_path / "dwi",
            phantom_data(shape),
            oblique_affine(shape),
            phantom.scheme.bvals,
            phantom.scheme.bvecs,
        )
        assert storescu(files, config.port, "NODDI2").returncode == 0
        letters = tmp_path / "spool" / "dead-letter" / "down"
        assert wait_for(lambda: list(letters.glob("*/reason.json")), 60)
    finally:
        node.stop()
    (job,) = letters.iterdir()
    assert sorted(p.name for p in job.iterdir() if p.is_dir()) == ["direction", "fwf", "ndi", "odi"]
    assert len(list(job.glob("*/*.dcm"))) == 4 * shape[2]
    assert json.loads((job / "job.json").read_text())["series_uid"] == uid_of(files)
    attempts = [r for r in caplog.records if getattr(r, "event", "") == "send_failed"]
    assert [r.attempt for r in attempts] == [1, 2, 3]
    assert not list((tmp_path / "spool" / "outgoing").iterdir())


def test_node_killed_while_receiving_then_restarted(tmp_path, orthanc, phantom):
    port = free_port()
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\nae_title = "NODDI3"\nhost = "127.0.0.1"\nport = {port}\n'
        f'[series]\nidle_timeout_s = 1.0\n[spool]\nfolder = "spool"\n'
        f"[processing]\nthreads = 1\n"
        f'[[destinations]]\nname = "pacs"\nae_title = "{orthanc.ae_title}"\n'
        f'host = "127.0.0.1"\nport = {orthanc.dicom_port}\n'
    )
    patient = {"PatientName": "RESTART^TEST", "PatientID": "ID-RESTART"}
    files = write_dwi_series(
        tmp_path / "dwi",
        phantom.data,
        phantom.affine,
        phantom.scheme.bvals,
        phantom.scheme.bvecs,
        patient=patient,
        series_number=9,
    )
    command = [sys.executable, "-m", "noddi_bids.cli.node", "--config", str(config)]

    def start():
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        line = wait_for(lambda: process.stderr.readline(), 60, interval=0)
        while line and "node_started" not in line:
            line = process.stderr.readline()
        assert line, "the node did not start"
        threading.Thread(target=process.stderr.read, daemon=True).start()  # drain
        return process

    process = start()
    sender = subprocess.Popen(
        [
            str(__import__("pacs").dcmtk_tool("storescu")),
            "-aec",
            "NODDI3",
            "-nh",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        env=__import__("pacs").NODELAY_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    incoming = tmp_path / "spool" / "incoming" / uid_of(files)
    assert wait_for(lambda: len(list(incoming.glob("*.dcm"))) >= 200, 60, interval=0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    sender.wait(timeout=60)
    spooled = {p.name for p in incoming.glob("*.dcm")}
    assert 200 <= len(spooled) < len(files)
    process = start()
    try:
        missing = [p for p in files if f"{pydicom.dcmread(p).SOPInstanceUID}.dcm" not in spooled]
        assert storescu(missing, port, "NODDI3").returncode == 0
        source = source_header(files)
        found = wait_for(
            lambda: len(map_series(orthanc, source)) == 4 and map_series(orthanc, source),
            60,
            interval=0.5,
        )
        assert found
        check_against_app(found["odi"], phantom.maps["odi"])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
