"""HTML reports: built from a small but real derivatives folder written with the app's naming.

The folder holds, per run, the mean b = 0 image, the brain mask, WM/GM/CSF masks, ODI/NDI/FWF
maps of a network (NN_MLE) and of the MLE fit with sidecars shaped like the app's, and the tissue
table made by :func:`noddi_bids.tissue.stats.tissue_table`. The reports are parsed with
:mod:`html.parser`: tags must balance, every figure must be embedded, nothing may load from
the network, and every estimator and tissue must be named.
"""

from __future__ import annotations

import base64
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")

from noddi_bids.io.derivatives import derivative_path, save_nifti, write_json, write_tsv  # noqa: E402
from noddi_bids.reports import (  # noqa: E402
    figures,
    node_timings,
    work_dir_timings,
    write_group_report,
    write_participant_report,
)
from noddi_bids.reports.participant import find_runs  # noqa: E402
from noddi_bids.tissue.stats import group_tables, tissue_table  # noqa: E402

SHAPE = (18, 16, 10)
ZOOMS = (2.0, 2.0, 2.5)
#: Phantom truth per tissue: ODI, NDI, FWF.
TRUTH = {"WM": (0.25, 0.7, 0.1), "GM": (0.5, 0.45, 0.05), "CSF": (0.5, 0.5, 0.95)}
MODEL_FILE = "nn-mle_scheme-3f2a.onnx"
MODEL_SHA256 = "9c1185a5c5e9fc54612808977ee8f548b2258d31" + "0" * 24
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base"}


# -- fixtures: a derivatives folder ------------------------------------------------------------
def _affine() -> np.ndarray:
    # LPS-like storage (x flipped) so that the report's reorientation to RAS is exercised.
    return np.diag([-ZOOMS[0], ZOOMS[1], ZOOMS[2], 1.0])


def _tissues() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    i, j, k = np.indices(SHAPE)
    centre = (np.array(SHAPE) - 1) / 2
    radius = np.sqrt(
        ((i - centre[0]) / 8) ** 2 + ((j - centre[1]) / 7) ** 2 + ((k - centre[2]) / 4.5) ** 2
    )
    brain = radius <= 1.0
    masks = {
        "CSF": brain & (radius < 0.35),
        "WM": brain & (radius >= 0.35) & (radius < 0.7),
        "GM": brain & (radius >= 0.7) & (radius < 0.95),
    }
    return brain, masks


def write_run(
    output_dir: Path,
    entities: dict[str, str],
    estimators: Sequence[str] = ("nnmle", "mle"),
    seed: int = 0,
) -> None:
    """Write one run's derivatives as the participant level names them."""
    rng = np.random.default_rng(seed)
    affine = _affine()
    brain, masks = _tissues()

    def save(data: np.ndarray, sidecar: dict, suffix: str, **extra: str) -> None:
        path = derivative_path(output_dir, entities, suffix, ".nii.gz", **extra)
        save_nifti(nib.Nifti1Image(np.asarray(data), affine), path)
        write_json(sidecar, path.with_name(path.name.removesuffix(".nii.gz") + ".json"))

    b0 = np.where(brain, 1000.0, 20.0) + rng.normal(0, 10, SHAPE)
    b0[masks["CSF"]] += 800.0
    save(
        b0.astype(np.float32), {"Description": "Mean of the b = 0 volumes"}, "dwiref", desc="meanb0"
    )
    save(brain.astype(np.uint8), {"Type": "Brain", "ExcludedVoxels": 3}, "mask", desc="brain")
    for tissue, mask in masks.items():
        details = {"Type": tissue, "Method": "built-in", "Threshold": 0.9}
        save(mask.astype(np.uint8), details, "mask", label=tissue)
    scheme = {
        "Summary": "81 volumes: b=0 x9, b=700 x24, b=2000 x48",
        "Hash": "3f2a9e01",
        "Shells": [700.0, 2000.0],
        "ShellCounts": [24, 48],
        "B0Volumes": 9,
        "B0Threshold": 50.0,
        "BValueUnits": "s/mm^2",
    }
    maps = {}
    for n, estimator in enumerate(estimators):
        noise = 0.03 if estimator.startswith("nn") else 0.08
        volumes = {p: np.zeros(SHAPE, np.float32) for p in ("odi", "ndi", "fwf")}
        for tissue, mask in masks.items():
            for p, truth in zip(("odi", "ndi", "fwf"), TRUTH[tissue], strict=True):
                values = truth + rng.normal(0, noise, int(mask.sum())) + 0.01 * n
                volumes[p][mask] = np.clip(values, 0, 1)
        maps[estimator] = volumes
        sidecar = {
            "Model": "NODDI",
            "Estimator": estimator,
            "Dpar": 1.7e-3,
            "Diso": 3.0e-3,
            "DiffusivityUnits": "mm^2/s",
            "Scheme": scheme,
            "SoftwareVersion": "0.1.0",
        }
        if estimator.startswith("nn"):
            sidecar |= {
                "ModelFile": MODEL_FILE,
                "ModelSHA256": MODEL_SHA256,
                "ModelLabels": "mle",
                "Software": "ONNX Runtime",
            }
        else:
            sidecar |= {"NoiseModel": "Rician", "ConvergedFraction": 0.98}
        for p, label in (("odi", "od"), ("ndi", "icvf"), ("fwf", "isovf")):
            save(volumes[p], sidecar, "dwimap", model="noddi", param=label, desc=estimator)
        # goodness of fit: NRMSE about 1/SNR, a corner of the brain out of model
        volumes["nrmse"] = np.where(brain, 0.05 + rng.normal(0, 0.005, SHAPE), 0).astype(np.float32)
        volumes["outofmodel"] = brain & (np.indices(SHAPE)[0] < 4)
        volumes["nrmse"][volumes["outofmodel"]] = 0.3
        quality = {**sidecar, "FitQuality": {"OutOfModelRatio": 2.0}}
        save(volumes["nrmse"], quality, "dwimap", model="noddi", param="nrmse", desc=estimator)
        flags = volumes["outofmodel"].astype(np.uint8)
        save(flags, quality, "mask", model="noddi", param="outofmodel", desc=estimator)
    table = tissue_table(maps, masks)
    write_tsv(table, derivative_path(output_dir, entities, "stats", ".tsv", desc="tissue"))


# -- HTML checks ------------------------------------------------------------------------------
class _Checker(HTMLParser):
    """Balanced tags, embedded images, links and resource attributes of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.resources: list[str] = []
        self.inline_svg = 0
        self.doctype = False
        self.text: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.doctype = self.doctype or decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "a" and values.get("href"):
            self.links.append(values["href"])
        if tag == "svg":
            self.inline_svg += 1
        for key in ("src", "href", "data", "srcset", "poster", "action"):
            if values.get(key):
                self.resources.append(values[key])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(path: Path) -> _Checker:
    """Parse a report and assert it is a valid, self-contained document."""
    text = path.read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.doctype, "no <!DOCTYPE html>"
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    assert "<html" in text and "<title>" in text
    for resource in checker.resources:
        assert not resource.lower().startswith(("http:", "https:", "//")), resource
    assert "url(http" not in text and "@import" not in text and "<script" not in text
    assert "<link" not in text  # style is inlined
    for src in checker.images:
        assert src.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")), src[:40]
        _check_image(src)
    return checker


def _check_image(src: str) -> None:
    header, payload = src.split(",", 1)
    raw = base64.b64decode(payload, validate=True)
    if header.startswith("data:image/png"):
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        return
    root = ET.fromstring(raw)
    assert root.tag.endswith("svg")
    for element in root.iter():
        for key, value in element.attrib.items():
            if key.endswith("href"):
                assert not value.startswith(("http:", "https:")), value


# -- tests ------------------------------------------------------------------------------------
PROVENANCE = {
    "command": ["noddi-bids", "/data/bids", "/data/out", "participant", "--mle"],
    "timings": {"reference": 1.25, "nn": 0.5, "mle": 61.0, "tissue_wf.dwi_tissue": 2.0},
}


@pytest.fixture(scope="module")
def derivatives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two participants (NN_MLE + MLE), their reports, the group table and the group report."""
    output_dir = tmp_path_factory.mktemp("reports") / "noddi-bids"
    tables = []
    for seed, subject in enumerate(("01", "02"), start=1):
        write_run(output_dir, {"sub": subject}, seed=seed)
        write_participant_report(output_dir, subject, None, PROVENANCE)
        path = derivative_path(output_dir, {"sub": subject}, "stats", ".tsv", desc="tissue")
        table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
        tables.append(({"participant_id": f"sub-{subject}"}, table))
    long, _ = group_tables(tables)
    write_tsv(long, output_dir / "group_tissue_stats.tsv")
    write_group_report(output_dir)
    return output_dir


def test_participant_report_embeds_every_figure_and_names_everything(derivatives: Path):
    checker = check_html(derivatives / "sub-01.html")
    # Mosaics of NN_MLE and MLE, goodness of fit, masks, one NN-vs-MLE scatter, histograms.
    assert len(checker.images) == 6
    assert sum(s.startswith("data:image/png") for s in checker.images) == 4
    assert sum(s.startswith("data:image/svg+xml") for s in checker.images) == 2
    text = " ".join(checker.text)
    for word in (
        "NN_MLE",
        "desc-nnmle",
        "MLE",
        "desc-mle",
        "WM",
        "GM",
        "CSF",
        "ODI",
        "NDI",
        "FWF",
        "sub-01_dwi",
        "Goodness of fit",
        "NRMSE",
        "above 2 times the local noise level",
    ):
        assert word in text, word
    # Provenance: model and checksum, scheme, diffusivities, command and timings.
    for word in (
        MODEL_FILE,
        MODEL_SHA256,
        "b=700 x24",
        "2000",
        "48",
        "0.0017 mm^2/s",
        "0.003 mm^2/s",
        "--mle",
        "tissue_wf.dwi_tissue",
        "61.0",
        "64.8",
    ):
        assert word in text, word
    assert "sub-02" not in text


def test_tissue_table_values_shown(derivatives: Path):
    table_path = derivative_path(derivatives, {"sub": "01"}, "stats", ".tsv", desc="tissue")
    table = pd.read_csv(table_path, sep="\t", na_values="n/a", keep_default_na=False)
    text = " ".join(check_html(derivatives / "sub-01.html").text)
    for record in table.itertuples():
        assert f"{record.fwf_mean:.2f} \u00b1 {record.fwf_sd:.2f}" in text
        assert str(record.n_voxels) in text
    wm = table[(table.tissue == "WM") & (table.estimator == "mle")].iloc[0]
    assert f"{wm.ndi_mean:.2f} \u00b1 {wm.ndi_sd:.2f}" in text
    assert f"{wm.nrmse_median:.3f}" in text and f"{100 * wm.outofmodel_fraction:.1f} %" in text


def test_report_per_session_covers_its_runs_only(tmp_path: Path):
    output_dir = tmp_path / "out"
    write_run(output_dir, {"sub": "03", "ses": "1", "run": "1"}, estimators=("nngt",), seed=3)
    write_run(output_dir, {"sub": "03", "ses": "1", "run": "2"}, estimators=("nngt",), seed=4)
    write_run(output_dir, {"sub": "03", "ses": "2"}, seed=5)
    runs = find_runs(output_dir, "03", "1")
    assert [r.name for r in runs] == ["sub-03_ses-1_run-1_dwi", "sub-03_ses-1_run-2_dwi"]
    assert all(r.estimators == ["nngt"] for r in runs)
    assert all(set(r.tissue_masks) == {"WM", "GM", "CSF"} for r in runs)
    assert all(r.stats is not None and r.brain_mask is not None for r in runs)
    path = write_participant_report(output_dir, "03", "1")
    assert path.name == "sub-03_ses-1.html"
    checker = check_html(path)
    assert len(checker.images) == 8  # per run: mosaic, goodness of fit, masks, histograms
    assert {"#sub-03_ses-1_run-1_dwi", "#sub-03_ses-1_run-2_dwi"} <= set(checker.links)
    assert "ses-2" not in " ".join(checker.text)
    # Without a session, a report would cover both sessions.
    everything = find_runs(output_dir, "sub-03")
    assert [r.name for r in everything][-1] == "sub-03_ses-2_dwi"
    assert everything[-1].estimators == ["nnmle", "mle"]


def test_report_without_mle_says_why_there_is_no_scatter(tmp_path: Path):
    output_dir = tmp_path / "out"
    write_run(output_dir, {"sub": "04"}, estimators=("nngt",), seed=6)
    checker = check_html(write_participant_report(output_dir, "04"))
    assert len(checker.images) == 4  # mosaic, goodness of fit, masks, histograms
    text = " ".join(checker.text)
    assert "NN_GT" in text and "Scatter plots need the maximum-likelihood fit" in text
    assert "No timings were passed" in text


def test_image_on_another_grid_is_left_out_with_a_notice(tmp_path: Path):
    output_dir = tmp_path / "out"
    write_run(output_dir, {"sub": "08"}, estimators=("nngt",), seed=9)
    gm = derivative_path(output_dir, {"sub": "08"}, "mask", ".nii.gz", label="GM")
    save_nifti(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), _affine()), gm)
    checker = check_html(write_participant_report(output_dir, "08"))
    text = " ".join(checker.text)
    assert "left out" in text and gm.name in text
    assert len(checker.images) == 4
    assert "(WM, CSF; bottom)" in text


def test_report_without_derivatives_is_still_written(tmp_path: Path):
    checker = check_html(write_participant_report(tmp_path, "05"))
    assert checker.images == []
    assert "No NODDI derivatives of sub-05" in " ".join(checker.text)


def test_group_report_links_every_participant(derivatives: Path):
    checker = check_html(derivatives / "group_report.html")
    assert {"sub-01.html", "sub-02.html"} <= set(checker.links)
    for link in (link for link in checker.links if not link.startswith("#")):
        assert (derivatives / link).is_file()
    assert len(checker.images) == 1 and checker.images[0].startswith("data:image/svg+xml")
    text = " ".join(checker.text)
    for word in ("NN_MLE", "desc-nnmle", "desc-mle", "WM", "GM", "CSF", "sub-01", "sub-02"):
        assert word in text, word
    figure = derivatives / "figures" / "group_tissue_stats.svg"
    assert ET.parse(figure).getroot().tag.endswith("svg")
    # Group mean and SD of WM NDI (MLE) over the two participants appear in the summary.
    long = pd.read_csv(derivatives / "group_tissue_stats.tsv", sep="\t")
    cell = long[(long.tissue == "WM") & (long.estimator == "mle") & (long.parameter == "ndi")]
    assert f"{cell['mean'].mean():.3f}" in text and f"{cell['mean'].std():.3f}" in text


def test_group_report_needs_the_group_table(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="run the group level first"):
        write_group_report(tmp_path)


def test_participant_reports_one_route(tmp_path: Path, caplog):
    """The app and ``python -m noddi_bids.reports`` write reports through one function."""
    from noddi_bids.cli.reports import main as reports_main
    from noddi_bids.reports import write_participant_reports

    output_dir = tmp_path / "out"
    for subject in ("06", "07"):
        write_run(output_dir, {"sub": subject}, estimators=("nnmle",), seed=7)
    (output_dir / "sub-07.html").mkdir()  # the report of sub-07 cannot be written
    command = ["noddi-bids", "bids", "out", "participant"]
    written = write_participant_reports(output_dir, ["06", "sub-07"], command=command)
    assert written == [output_dir / "sub-06.html"]
    assert "Could not write the report of sub-07" in caplog.text
    text = " ".join(check_html(written[0]).text)
    assert "noddi-bids bids out participant" in text
    assert reports_main(["participant", str(output_dir), "--participant-label", "06"]) == 0
    assert reports_main(["participant", str(output_dir)]) == 1


def test_node_timings_from_an_executed_workflow(tmp_path: Path):
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    def double(x):
        return 2 * x

    top = pe.Workflow(name="noddi_bids_wf", base_dir=str(tmp_path))
    participant = pe.Workflow(name="sub_01_wf")
    first = pe.Node(
        niu.Function(input_names=["x"], output_names=["y"], function=double), name="first"
    )
    first.inputs.x = 1
    second = pe.Node(
        niu.Function(input_names=["x"], output_names=["y"], function=double), name="second"
    )
    participant.connect(first, "y", second, "x")
    top.add_nodes([participant])
    graph = top.run(plugin="Linear")
    timings = node_timings(graph, subject="01")
    assert set(timings) == {"first", "second"}
    assert all(0.0 <= t < 60.0 for t in timings.values())
    assert set(node_timings(graph)) == {"sub_01_wf.first", "sub_01_wf.second"}
    assert node_timings(graph, subject="02") == {}
    # The work folder's result files give the same steps (also after a failed run).
    assert work_dir_timings(tmp_path, subject="01") == pytest.approx(timings)
    assert list(work_dir_timings(tmp_path)) == ["sub_01_wf.first", "sub_01_wf.second"]


def test_command_line_remakes_reports(tmp_path: Path, capsys):
    from noddi_bids.cli.reports import main

    output_dir = tmp_path / "out"
    write_run(output_dir, {"sub": "07"}, estimators=("nngt",), seed=8)
    assert main(["participant", str(output_dir)]) == 0
    assert check_html(output_dir / "sub-07.html").images
    assert main(["group", str(output_dir)]) == 1
    assert "run the group level first" in capsys.readouterr().err


def test_mosaic_follows_the_mask_and_orientation():
    brain, _ = _tissues()
    slices = figures.axial_slices(brain, 4)
    occupied = np.flatnonzero(brain.any(axis=(0, 1)))
    assert len(slices) == 4 and occupied[0] < slices[0] and slices[-1] < occupied[-1]
    box = figures.bounding_box(brain, margin=1)
    assert brain[box[0], box[1], :].sum() == brain.sum()
    # An image stored left-right flipped reorients to the same RAS data.
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    ras = nib.Nifti1Image(data, np.diag([*ZOOMS, 1.0]))
    las = nib.Nifti1Image(data[::-1].copy(), np.diag([-ZOOMS[0], ZOOMS[1], ZOOMS[2], 1.0]))
    assert np.array_equal(figures.canonical_volume(ras)[0], figures.canonical_volume(las)[0])
    png = figures.map_mosaic({"odi": data / data.max()}, ZOOMS, brain, n_slices=3)
    assert png.startswith(b"\x89PNG")
