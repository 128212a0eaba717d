"""Participant report: one self-contained HTML page per participant (and session).

The report is built from what the participant level left in the derivatives folder, found with
the names of :mod:`noddi_bids.io.derivatives`, so it can be (re)made at any time after a run:

- maps ``*_model-noddi_param-<od|icvf|isovf>_desc-<estimator>_dwimap.nii.gz`` and their JSON
  sidecars (model file and checksum, scheme, d_par, d_iso);
- goodness-of-fit maps ``*_model-noddi_param-<rmse|nrmse>_desc-<estimator>_dwimap.nii.gz`` and
  out-of-model voxels ``*_model-noddi_param-outofmodel_desc-<estimator>_mask.nii.gz``;
- the mean b = 0 image (``desc-meanb0_dwiref``), brain mask (``desc-brain_mask``) and tissue
  masks (``label-<WM|GM|CSF>_mask``);
- the tissue table ``desc-tissue_stats.tsv``.

Missing pieces are reported in the page instead of failing, since the report is also written
after a partial failure.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from noddi_bids import __version__
from noddi_bids.io.bids import parse_entities
from noddi_bids.io.derivatives import (
    DERIVATIVE_ENTITIES,
    ENTITY_ORDER,
    derivative_name,
    derivative_path,
    flag_path,
    map_path,
    sidecar_path,
)
from noddi_bids.reports import figures
from noddi_bids.reports import html as page
from noddi_bids.reports.provenance import work_dir_timings
from noddi_bids.tissue.stats import TISSUE_PARAMETERS
from noddi_bids.vocabulary import (
    ESTIMATORS,
    FLAGS,
    MLE,
    PARAMETER_OF_LABEL,
    PARAMETERS,
    QUALITY_MAPS,
    TISSUES,
)

LOGGER = logging.getLogger("noddi_bids.reports")
#: Colour scale of the standard-deviation maps (ODI, NDI, FWF lie in [0, 1]).
SD_RANGE = (0.0, 0.2)
#: Entities that identify a dwi run (those a derivative adds are left out).
RUN_ENTITIES = tuple(e for e in ENTITY_ORDER if e not in DERIVATIVE_ENTITIES)


@dataclass
class RunDerivatives:
    """Derivatives of one dwi run found in the output folder (absent files are left out)."""

    entities: dict[str, str]
    maps: dict[str, dict[str, Path]] = field(default_factory=dict)
    quality: dict[str, dict[str, Path]] = field(default_factory=dict)
    uncertainty: dict[str, dict[str, Path]] = field(default_factory=dict)
    mean_b0: Path | None = None
    brain_mask: Path | None = None
    tissue_masks: dict[str, Path] = field(default_factory=dict)
    stats: Path | None = None

    @property
    def name(self) -> str:
        """Name of the run, e.g. ``sub-01_ses-1_run-1_dwi``."""
        return derivative_name(self.entities, "dwi", "")

    @property
    def estimators(self) -> list[str]:
        """``desc-`` labels of the estimators with maps, networks first, then in label order."""
        known = list(ESTIMATORS)
        return sorted(self.maps, key=lambda d: (known.index(d) if d in known else len(known), d))


def find_runs(output_dir: Path, subject: str, session: str | None = None) -> list[RunDerivatives]:
    """Find the dwi runs of a participant in a derivatives folder.

    Parameters
    ----------
    output_dir : Path
        Derivatives folder of noddi-bids.
    subject : str
        Participant label, with or without ``sub-``.
    session : str, optional
        Session label (with or without ``ses-``); all sessions when omitted.

    Returns
    -------
    list of RunDerivatives
        One per run with a map or a mean b = 0 image, sorted by name.
    """
    subject = subject.removeprefix("sub-")
    session = session.removeprefix("ses-") if session else None
    root = Path(output_dir) / f"sub-{subject}"
    folders = [root / f"ses-{session}" / "dwi"] if session else [root / "dwi"]
    if not session:
        folders += sorted(root.glob("ses-*/dwi"))
    keys: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for folder in folders:
        found = [
            *folder.glob("*_model-noddi_param-*_desc-*_dwimap.nii.gz"),
            *folder.glob("*_desc-meanb0_dwiref.nii.gz"),
        ]
        for path in found:
            entities = parse_entities(path.name)
            run = {key: entities[key] for key in RUN_ENTITIES if key in entities}
            if run.get("sub") == subject and (session is None or run.get("ses") == session):
                keys.setdefault(tuple(run.items()), run)
    runs = [_collect_run(Path(output_dir), run) for run in keys.values()]
    return sorted(runs, key=lambda r: r.name)


def _collect_run(output_dir: Path, run: dict[str, str]) -> RunDerivatives:
    def existing(suffix: str, extension: str = ".nii.gz", **entities: str) -> Path | None:
        path = derivative_path(output_dir, run, suffix, extension, **entities)
        return path if path.is_file() else None

    found = RunDerivatives(entities=run)
    folder = derivative_path(output_dir, run, "dwi", "").parent
    prefix = derivative_name(run, "", "")  # "sub-01_run-1_"
    for path in folder.glob(f"{prefix}model-noddi_param-*_desc-*_dwimap.nii.gz"):
        entities = parse_entities(path.name)
        parameter = PARAMETER_OF_LABEL.get(entities.get("param", ""))
        desc = entities.get("desc", "")
        if parameter not in (*PARAMETERS, *QUALITY_MAPS) or desc not in ESTIMATORS:
            continue
        # Keep only the names the naming function gives this run (not those of a run with more
        # entities, such as run-1 when this run has none).
        if path != map_path(output_dir, run, parameter, desc):
            continue
        kind = found.maps if parameter in PARAMETERS else found.quality
        kind.setdefault(desc, {})[parameter] = path
    for desc in found.maps:
        for flag in FLAGS:
            if flag_path(output_dir, run, flag, desc).is_file():
                kind = found.uncertainty if flag == "singular" else found.quality
                kind.setdefault(desc, {})[flag] = flag_path(output_dir, run, flag, desc)
        for parameter in PARAMETERS:
            path = map_path(output_dir, run, parameter, desc, stat="sd")
            if path.is_file():
                found.uncertainty.setdefault(desc, {})[parameter] = path
    orders = ((found.maps, PARAMETERS), (found.quality, (*QUALITY_MAPS, *FLAGS)),
              (found.uncertainty, (*PARAMETERS, *FLAGS)))  # fmt: skip
    for kind, order in orders:
        for estimator in kind:
            kind[estimator] = {p: kind[estimator][p] for p in order if p in kind[estimator]}
    found.mean_b0 = existing("dwiref", desc="meanb0")
    found.brain_mask = existing("mask", desc="brain")
    for tissue in TISSUES:
        mask = existing("mask", label=tissue)
        if mask is not None:
            found.tissue_masks[tissue] = mask
    found.stats = existing("stats", ".tsv", desc="tissue")
    return found


def write_participant_report(
    output_dir: Path,
    subject: str,
    session: str | None = None,
    provenance: Mapping[str, Any] | None = None,
    *,
    n_slices: int = 8,
) -> Path:
    """Write the HTML report of a participant beside its derivatives.

    Parameters
    ----------
    output_dir : Path
        Derivatives folder of noddi-bids (the participant level's output folder).
    subject : str
        Participant label, with or without ``sub-``.
    session : str, optional
        Session label; when omitted, one report covers every session of the participant.
    provenance : mapping, optional
        Run details known to the caller only: ``command`` (str or argument list), ``timings``
        (mapping step -> seconds, e.g. from :func:`noddi_bids.reports.provenance.node_timings`);
        any other key is listed as given.
    n_slices : int
        Axial slices per mosaic.

    Returns
    -------
    Path
        ``output_dir/sub-<label>[_ses-<label>].html``, written atomically.
    """
    subject = subject.removeprefix("sub-")
    session = session.removeprefix("ses-") if session else None
    output_dir = Path(output_dir)
    label = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    runs = find_runs(output_dir, subject, session)
    nav: list[tuple[str, str]] = []
    body: list[str] = []
    if not runs:
        LOGGER.warning("%s: no NODDI derivatives of %s; the report says so.", output_dir, label)
        body.append(page.notice(f"No NODDI derivatives of {label} were found in {output_dir}."))
    for run in runs:
        anchor = run.name
        nav.append((f"#{anchor}", run.name))
        body.append(page.section(anchor, run.name, _run_html(run, n_slices)))
    nav.append(("#provenance", "Provenance"))
    body.append(page.section("provenance", "Provenance", _provenance_html(runs, provenance)))
    subtitle = f"NODDI maps (ODI, NDI, FWF) of {label}: {len(runs)} dwi run(s); estimators " + (
        ", ".join(figures.estimator_label(e) for e in _all_estimators(runs)) or "none"
    )
    text = page.render_page(f"noddi-bids report: {label}", subtitle, nav, "\n".join(body))
    path = page.write_html(text, output_dir / f"{label}.html")
    LOGGER.info("Participant report: %s", path)
    return path


def write_participant_reports(
    output_dir: Path,
    subjects: Sequence[str],
    session: str | None = None,
    *,
    command: Sequence[str] | str | None = None,
    work_dir: Path | None = None,
) -> list[Path]:
    """Write the reports of participants, each with the provenance the caller knows.

    The one route to participant reports: the participant level calls it after its workflow
    (also after a failure, to show what exists) and ``python -m noddi_bids.reports`` to remake
    them. A report that fails is logged and the others are still written.

    Parameters
    ----------
    output_dir : Path
        Derivatives folder of noddi-bids.
    subjects : sequence of str
        Participant labels, with or without ``sub-``.
    session : str, optional
        One report of this session only (default: one report per participant).
    command : sequence of str or str, optional
        The command line of the run.
    work_dir : Path, optional
        Nipype work folder: each participant's step timings (:func:`work_dir_timings`).

    Returns
    -------
    list of Path
        The reports written (fewer than ``subjects`` when some failed).
    """
    written = []
    for subject in subjects:
        provenance: dict[str, Any] = {}
        if command:
            provenance["command"] = command
        if work_dir is not None:
            provenance["timings"] = work_dir_timings(work_dir, subject.removeprefix("sub-"))
        try:
            written.append(write_participant_report(output_dir, subject, session, provenance))
        except Exception:  # noqa: BLE001 - one failed report must not stop the others
            LOGGER.exception("Could not write the report of sub-%s.", subject.removeprefix("sub-"))
    return written


def _all_estimators(runs: Sequence[RunDerivatives]) -> list[str]:
    return list(dict.fromkeys(e for run in runs for e in run.estimators))


def _run_html(run: RunDerivatives, n_slices: int) -> str:
    parts: list[str] = []
    loaded = {path: _load(path) for path in _run_images(run)}
    shapes = [volume.shape for volume, _ in loaded.values()]
    grid = shapes[0] if shapes else None
    off_grid = [p.name for p, (volume, _) in loaded.items() if volume.shape != grid]
    if off_grid:
        parts.append(page.notice(f"Not on the grid {grid} of the run, left out: {off_grid}."))
    loaded = {p: image for p, image in loaded.items() if p.name not in off_grid}
    reference = loaded.get(run.mean_b0)
    mask = loaded[run.brain_mask][0] > 0 if run.brain_mask in loaded else None
    tissues = {t: loaded[p][0] > 0 for t, p in run.tissue_masks.items() if p in loaded}
    maps = {
        estimator: {p: loaded[path] for p, path in files.items() if path in loaded}
        for estimator, files in run.maps.items()
    }
    maps = {estimator: images for estimator, images in maps.items() if images}
    if not maps:
        parts.append(page.notice("No NODDI maps were found for this run."))
    parts.append(_gradient_check_html(run))
    # Mosaics of the maps, one figure per estimator.
    for estimator, images in maps.items():
        volumes = {p: image[0] for p, image in images.items()}
        zooms = next(iter(images.values()))[1]
        name = figures.estimator_label(estimator)
        png = figures.map_mosaic(volumes, zooms, mask, n_slices=n_slices, title=name)
        caption = (
            f"{name}: {', '.join(figures.PARAMETER_NAMES[p] for p in volumes)} on axial slices "
            f"(inferior to superior), colour scale fixed to [0, 1]; black outside the brain mask."
        )
        parts.append(page.figure_html(png, page.PNG, caption, f"{name} maps"))
    parts.append(_heading(run, "fit", "Goodness of fit"))
    parts.append(_quality_html(run, loaded, mask, n_slices))
    parts.append(_heading(run, "uncertainty", "Uncertainty"))
    parts.append(_uncertainty_html(run, loaded, mask, n_slices))
    # Masks on the mean b = 0 image.
    if reference is not None:
        png = figures.mask_mosaic(reference[0], reference[1], mask, tissues, n_slices=n_slices)
        caption = "Mean b = 0 image with the brain mask outline (top) and the tissue masks " + (
            f"({', '.join(tissues)}; bottom)." if tissues else "(none found)."
        )
        parts.append(page.figure_html(png, page.PNG, caption, "brain and tissue masks"))
    else:
        parts.append(page.notice("No mean b = 0 image was found; masks are not shown."))
    # Tissue table.
    parts.append(_heading(run, "table", "Tissue table") + _tissue_table_html(run.stats))
    # Voxel values per tissue: scatter of each network against MLE, histograms.
    values = {
        estimator: {
            tissue: {p: volume[0][tissue_mask] for p, volume in images.items()}
            for tissue, tissue_mask in tissues.items()
        }
        for estimator, images in maps.items()
    }
    parts.append(_heading(run, "scatter", "Estimators compared voxel by voxel"))
    parts.append(_scatter_html(values))
    parts.append(_heading(run, "histograms", "Distributions per tissue"))
    parts.append(_histogram_html(values))
    return "\n".join(parts)


def _run_images(run: RunDerivatives) -> list[Path]:
    """Images of a run, the mean b = 0 first (it defines the grid), then maps and masks."""
    estimates = (*run.maps.values(), *run.quality.values(), *run.uncertainty.values())
    maps = [path for files in estimates for path in files.values()]
    masks = [run.brain_mask, *run.tissue_masks.values()]
    return [p for p in (run.mean_b0, *maps, *masks) if p is not None]


def _heading(run: RunDerivatives, key: str, title: str) -> str:
    return f'<h3 id="{page.escape(run.name)}-{key}">{page.escape(title)}</h3>'


def _gradient_check_html(run: RunDerivatives) -> str:
    """Verdict of the gradient-table check, from the first map sidecar that has one."""
    for files in run.maps.values():
        check = _sidecar(next(iter(files.values()))).get("GradientCheck")
        if check:
            break
    else:
        return ""
    text = f"Gradient-table check: {check.get('Summary', check.get('Verdict'))}"
    if check.get("Verdict") != "error":
        return f"<p>{page.escape(text)}.</p>"
    applied = "applied" if check.get("Applied") else "not applied: the maps use the table as given"
    return page.notice(f"{text}; correction {check.get('Correction')} {applied}.")


def _quality_html(
    run: RunDerivatives,
    loaded: Mapping[Path, tuple[np.ndarray, tuple]],
    mask: np.ndarray | None,
    n_slices: int,
) -> str:
    """NRMSE of every estimator on one colour scale, out-of-model voxels in red."""
    nrmse, flags, zooms = {}, {}, None
    for estimator in (e for e in run.estimators if e in run.quality):
        files = run.quality[estimator]
        if files.get("nrmse") not in loaded:
            continue
        row = f"NRMSE {figures.estimator_name(estimator)}"
        nrmse[row], zooms = loaded[files["nrmse"]]
        if files.get("outofmodel") in loaded:
            flags[row] = loaded[files["outofmodel"]][0] > 0
    if not nrmse:
        return page.notice("No goodness-of-fit maps (param-nrmse) were found for this run.")
    inside = np.ones(next(iter(nrmse.values())).shape, bool) if mask is None else mask
    values = np.concatenate([volume[inside] for volume in nrmse.values()])
    values = values[np.isfinite(values)]
    high = float(f"{3 * np.median(values):.2g}") if values.size and np.median(values) > 0 else 1.0
    png = figures.map_mosaic(nrmse, zooms, mask, n_slices=n_slices, value_range=(0.0, high),
                             flags=flags, title="Goodness of fit")  # fmt: skip
    counts = ", ".join(
        f"{figures.estimator_name(e)} {int(np.count_nonzero(flags[r]))}"
        for e, r in ((e, f"NRMSE {figures.estimator_name(e)}") for e in run.estimators)
        if r in flags
    )
    caption = (
        "NRMSE of each estimate: root-mean-square difference between the measured signal and "
        "the signal the estimate predicts (forward model with its S0 and fibre direction), over "
        "all volumes, divided by the voxel's mean b = 0 signal; about 1/SNR where the model "
        f"fits. Colour scale [0, {high:g}] (three times the median). Red: voxels out of model "
        f"(NRMSE above {_ratio(run)} times the local noise level)"
        + (f"; voxels flagged: {counts}." if counts else ".")
    )
    return page.figure_html(png, page.PNG, caption, "goodness of fit")


def _uncertainty_html(
    run: RunDerivatives,
    loaded: Mapping[Path, tuple[np.ndarray, tuple]],
    mask: np.ndarray | None,
    n_slices: int,
) -> str:
    """Show the standard deviations of each estimator that has them, voxels without in red."""
    parts = []
    for estimator in (e for e in run.estimators if e in run.uncertainty):
        files = run.uncertainty[estimator]
        rows = {
            f"SD {figures.PARAMETER_NAMES[p]}": loaded[files[p]]
            for p in PARAMETERS
            if files.get(p) in loaded
        }
        if not rows:
            continue
        zooms = next(iter(rows.values()))[1]
        volumes = {row: image[0] for row, image in rows.items()}
        flags = {}
        if files.get("singular") in loaded:
            flags = {row: loaded[files["singular"]][0] > 0 for row in volumes}
        name = figures.estimator_name(estimator)
        title = f"{name}: standard deviations"
        png = figures.map_mosaic(volumes, zooms, mask, n_slices=n_slices, flags=flags,
                                 value_range=SD_RANGE, title=title)  # fmt: skip
        singular = int(np.count_nonzero(next(iter(flags.values())))) if flags else 0
        caption = (
            f"{figures.estimator_label(estimator)}: standard deviation of each estimate, from the "
            "Fisher information of the Rician likelihood at the estimate; colour scale "
            f"[0, {SD_RANGE[1]:g}]. Red: voxels whose information matrix is singular (no "
            f"standard deviation; {singular} voxels)."
        )
        parts.append(page.figure_html(png, page.PNG, caption, f"{name} standard deviations"))
    return "".join(parts) or page.notice(
        "No standard-deviation maps (stat-sd) were found for this run; the maximum-likelihood "
        "fit (--mle) writes them."
    )


def _ratio(run: RunDerivatives) -> str:
    """Out-of-model ratio recorded in the sidecars of the run's goodness-of-fit maps."""
    for files in run.quality.values():
        if "nrmse" in files:
            ratio = _sidecar(files["nrmse"]).get("FitQuality", {}).get("OutOfModelRatio")
            if ratio is not None:
                return f"{ratio:g}"
    return "a set number of"


def _scatter_html(values: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> str:
    if MLE not in values or not any(values[MLE].values()):
        return page.notice(
            "Scatter plots need the maximum-likelihood fit (MLE) and tissue masks; run the "
            "participant level with the MLE fit to compare the network against it."
        )
    parts = []
    for estimator in (e for e in values if e != MLE):
        svg = figures.estimator_scatter(
            values[MLE],
            values[estimator],
            figures.estimator_name(MLE),
            figures.estimator_name(estimator),
            TISSUE_PARAMETERS,
        )
        caption = (
            f"{figures.estimator_label(estimator)} against {figures.estimator_label(MLE)} per "
            "tissue voxel, with the identity line (dashed); at most 4000 voxels drawn per panel."
        )
        parts.append(page.figure_html(svg, page.SVG, caption, f"{estimator} vs {MLE} scatter"))
    if not parts:
        parts.append(page.notice("Only the MLE fit was found; there is nothing to compare."))
    return "".join(parts)


def _histogram_html(values: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> str:
    if not values or not any(values[e] for e in values):
        return page.notice("Histograms need NODDI maps and tissue masks.")
    svg = figures.tissue_histograms(values, TISSUE_PARAMETERS)
    names = ", ".join(figures.estimator_label(e) for e in values)
    caption = f"Histograms (unit area, 40 bins over [0, 1]) within each tissue: {names}."
    return page.figure_html(svg, page.SVG, caption, "histograms per tissue")


def _tissue_table_html(path: Path | None) -> str:
    if path is None:
        return page.notice("No tissue table (desc-tissue_stats.tsv) was found.")
    table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    header = ["tissue", "estimator", "voxels", *(figures.PARAMETER_NAMES[p] for p in PARAMETERS),
              "median NRMSE", "out of model"]  # fmt: skip
    rows = []
    for record in table.to_dict("records"):
        cells = [
            record["tissue"],
            figures.estimator_label(str(record["estimator"])),
            _integer(record.get("n_voxels")),
        ]
        for parameter in PARAMETERS:
            mean, sd = record.get(f"{parameter}_mean"), record.get(f"{parameter}_sd")
            cells.append("-" if pd.isna(mean) else f"{mean:.2f} \u00b1 {sd:.2f}")
        nrmse, flagged = record.get("nrmse_median"), record.get("outofmodel_fraction")
        cells.append("-" if nrmse is None or pd.isna(nrmse) else f"{nrmse:.3f}")
        cells.append("-" if flagged is None or pd.isna(flagged) else f"{100 * flagged:.1f} %")
        rows.append(cells)
    caption = (
        f"<p>Mean \u00b1 population SD within each tissue, from <code>{page.escape(path.name)}"
        "</code> (CSF: FWF only); median NRMSE of the estimate and the share of voxels out of "
        "model.</p>"
    )
    return caption + page.table_html(header, rows, numeric=range(2, len(header)))


def _integer(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else str(int(value))


def _provenance_html(runs: Sequence[RunDerivatives], provenance: Mapping[str, Any] | None) -> str:
    provenance = dict(provenance or {})
    items = [("noddi-bids version (report)", __version__)]
    command = provenance.pop("command", None)
    if command:
        items.append(
            ("Command line", command if isinstance(command, str) else shlex.join(map(str, command)))
        )
    timings = provenance.pop("timings", None) or {}
    items.extend((str(key), _plain(value)) for key, value in provenance.items())
    parts = [page.definition_list(items)]
    for run in runs:
        parts.append(f"<h3>{page.escape(run.name)}</h3>")
        parts.append(_run_provenance_html(run))
    parts.append("<h3>Timings per step</h3>")
    if timings:
        rows = [(step, f"{float(seconds):.1f}") for step, seconds in timings.items()]
        rows.append(("total", f"{sum(float(s) for s in timings.values()):.1f}"))
        parts.append(page.table_html(["step", "seconds"], rows, numeric=[1]))
    else:
        parts.append(page.notice("No timings were passed to the report."))
    return "\n".join(parts)


def _run_provenance_html(run: RunDerivatives) -> str:
    parts = []
    scheme_shown = False
    for estimator in run.estimators:
        first = next(iter(run.maps[estimator].values()))
        sidecar = _sidecar(first)
        items = [
            (
                "Estimator",
                f"{figures.estimator_label(estimator)}: {ESTIMATORS[estimator].words}",
            ),
            ("Maps", ", ".join(p.name for p in run.maps[estimator].values())),
        ]
        keys = (
            "SoftwareVersion",
            "Software",
            "ModelFile",
            "ModelSHA256",
            "ModelLabels",
            "ModelVersion",
            "ModelTrainingSNR",
            "NoiseModel",
            "ConvergedFraction",
            "ExcludedVoxels",
        )
        items += [(key, _plain(sidecar[key])) for key in keys if key in sidecar]
        units = sidecar.get("DiffusivityUnits", "mm^2/s")
        for key, name in (("Dpar", "d_par"), ("Diso", "d_iso")):
            if key in sidecar:
                items.append((name, f"{_plain(sidecar[key])} {units}"))
        parts.append(f"<h4>{page.escape(figures.estimator_label(estimator))}</h4>")
        parts.append(page.definition_list(items))
        scheme = sidecar.get("Scheme")
        if scheme and not scheme_shown:
            parts.insert(0, _scheme_html(scheme))
            scheme_shown = True
    if run.tissue_masks:
        details = _sidecar(next(iter(run.tissue_masks.values())))
        per_mask = ("Type", "Description", "SpatialReference", "Sources")
        shown = {k: v for k, v in details.items() if k not in per_mask}
        items = [("Tissue masks", ", ".join(p.name for p in run.tissue_masks.values()))]
        items += [(key, _plain(value)) for key, value in shown.items()]
        parts.append("<h4>Tissue masks</h4>" + page.definition_list(items))
    if run.brain_mask is not None:
        details = _sidecar(run.brain_mask)
        items = [("Brain mask", run.brain_mask.name)]
        items += [(k, _plain(v)) for k, v in details.items() if k != "Type"]
        parts.append("<h4>Brain mask</h4>" + page.definition_list(items))
    return "\n".join(parts) or page.notice("No sidecars were found for this run.")


def _scheme_html(scheme: Mapping[str, Any]) -> str:
    units = scheme.get("BValueUnits", "s/mm^2")
    rows = [("0", str(scheme.get("B0Volumes", "-")))]
    rows += [
        (f"{b:g}", str(n))
        for b, n in zip(scheme.get("Shells", []), scheme.get("ShellCounts", []), strict=False)
    ]
    items = [
        (key, _plain(scheme[key])) for key in ("Summary", "Hash", "B0Threshold") if key in scheme
    ]
    return (
        "<h4>Acquisition scheme</h4>"
        + page.definition_list(items)
        + page.table_html([f"shell (b, {units})", "volumes"], rows, numeric=[0, 1])
    )


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, sort_keys=True)


def _sidecar(image: Path) -> dict[str, Any]:
    path = sidecar_path(image)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        LOGGER.warning("%s: unreadable sidecar (%s).", path, err)
        return {}


def _load(path: Path) -> tuple[np.ndarray, tuple]:
    return figures.canonical_volume(nib.load(path))
