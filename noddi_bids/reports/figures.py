"""Report figures: plain functions on arrays that return PNG bytes or SVG text.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot state, no
display, no network) and returns the encoded image. Volumes are expected in RAS+ voxel order
(see :func:`canonical_volume`), so axial slices are ``volume[:, :, k]``; they are drawn in the
neurological convention (the participant's right on the right of the panel, anterior up).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib as mpl
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from noddi_bids.vocabulary import ESTIMATORS, MAPS, PARAMETERS

#: Colour scale of every NODDI map (all three are fractions or indices in [0, 1]).
MAP_RANGE = (0.0, 1.0)
#: Colour map of the NODDI maps.
MAP_CMAP = "viridis"
#: Display names of NODDI parameters.
PARAMETER_NAMES = {p: MAPS[p].display for p in PARAMETERS}
#: Colour of each tissue in overlays and plots.
TISSUE_COLOURS = {"WM": "#4477aa", "GM": "#228833", "CSF": "#ee6677"}
#: Colour of each estimator in plots.
ESTIMATOR_COLOURS = dict(zip(ESTIMATORS, ("#0077bb", "#ee7733", "#009988", "#333333"), strict=True))
#: Brain-mask contour colour.
MASK_COLOUR = "#ee3377"
#: Colour of flagged voxels (out of model) drawn on a map.
FLAG_COLOUR = "#ff2222"
#: Salt of matplotlib's SVG element ids, so that the same figure gives the same text.
_SVG_RC = {"svg.hashsalt": "noddi-bids", "svg.fonttype": "path"}
_PANEL_INCHES = 1.4


def estimator_name(desc: str) -> str:
    """Display name of an estimator's ``desc-`` label (the label itself when unknown)."""
    return ESTIMATORS[desc].display if desc in ESTIMATORS else desc


def estimator_label(desc: str) -> str:
    """Label of an estimator in the reports, e.g. ``NN_MLE (desc-nnmle)``."""
    return f"{estimator_name(desc)} (desc-{desc})"


def canonical_volume(image: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, tuple]:
    """Reorient an image to RAS+ and return its data (float32) and voxel sizes (mm).

    Parameters
    ----------
    image : nibabel image
        3-D image (a 4-D image with one volume is squeezed).

    Returns
    -------
    data : numpy.ndarray
        3-D array in RAS+ voxel order.
    zooms : tuple of float
        Voxel sizes along the three axes, mm.
    """
    canonical = nib.as_closest_canonical(image)
    data = np.asarray(canonical.dataobj, dtype=np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D image, got shape {data.shape}")
    return data, tuple(float(z) for z in canonical.header.get_zooms()[:3])


def axial_slices(mask: np.ndarray, n_slices: int = 8) -> list[int]:
    """Pick ``n_slices`` axial slice indices spread evenly over the extent of ``mask``.

    Parameters
    ----------
    mask : numpy.ndarray
        3-D boolean array (RAS+); an empty mask spreads the slices over the whole volume.
    n_slices : int
        Number of slices wanted (fewer when the mask spans fewer slices).

    Returns
    -------
    list of int
    """
    occupied = np.flatnonzero(np.any(mask, axis=(0, 1)))
    if occupied.size == 0:
        occupied = np.arange(mask.shape[2])
    first, last = int(occupied[0]), int(occupied[-1])
    count = min(n_slices, last - first + 1)
    # Keep clear of the first and last slices of the mask, which are mostly partial.
    positions = np.linspace(first, last, count + 2)[1:-1] if count > 2 else np.arange(count) + first
    return sorted({int(round(p)) for p in positions})


def bounding_box(mask: np.ndarray, margin: int = 2) -> tuple[slice, slice]:
    """In-plane (x, y) slices covering ``mask`` plus ``margin`` voxels (whole plane if empty)."""
    if not mask.any():
        return slice(None), slice(None)
    box = []
    for axis in (0, 1):
        other = tuple(a for a in range(3) if a != axis)
        occupied = np.flatnonzero(np.any(mask, axis=other))
        start = max(int(occupied[0]) - margin, 0)
        stop = min(int(occupied[-1]) + margin + 1, mask.shape[axis])
        box.append(slice(start, stop))
    return box[0], box[1]


def stitch_slices(
    volume: np.ndarray, slices: Sequence[int], box: tuple[slice, slice], fill: float = np.nan
) -> np.ndarray:
    """Axial slices side by side in one 2-D array (rows: y, columns: x), one voxel apart.

    Parameters
    ----------
    volume : numpy.ndarray
        3-D array, RAS+.
    slices : sequence of int
        Axial slice indices, left to right.
    box : tuple of slice
        In-plane crop (:func:`bounding_box`).
    fill : float
        Value of the one-voxel gaps between slices.

    Returns
    -------
    numpy.ndarray
        Shape ``(ny, len(slices) * (nx + 1) - 1)``, for ``imshow(..., origin="lower")``.
    """
    planes = [np.asarray(volume[box[0], box[1], k], float).T for k in slices]
    gap = np.full((planes[0].shape[0], 1), fill)
    pieces = [piece for plane in planes for piece in (plane, gap)][:-1]
    return np.concatenate(pieces, axis=1)


def map_mosaic(
    maps: Mapping[str, np.ndarray],
    zooms: Sequence[float],
    mask: np.ndarray | None = None,
    *,
    n_slices: int = 8,
    title: str | None = None,
    value_range: tuple[float, float] = MAP_RANGE,
    flags: Mapping[str, np.ndarray] | None = None,
) -> bytes:
    """Mosaic of axial slices of maps, one row per map, each with a colour bar.

    Parameters
    ----------
    maps : mapping
        Row -> 3-D array in RAS+ order, all of one shape; a parameter name (``odi``, ``ndi``,
        ``fwf``) is shown as its display name, any other key as given.
    zooms : sequence of float
        Voxel sizes, mm (for the aspect ratio).
    mask : numpy.ndarray, optional
        Brain mask; voxels outside are drawn black and the slices span its extent.
    n_slices : int
        Number of axial slices (inferior to superior, left to right).
    title : str, optional
        Figure title.
    value_range : tuple of float
        Colour scale of every row (default [0, 1], the range of the NODDI maps).
    flags : mapping, optional
        Row -> boolean 3-D array of voxels drawn in :data:`FLAG_COLOUR` on top of the map.

    Returns
    -------
    bytes
        PNG image.
    """
    shape = next(iter(maps.values())).shape
    mask = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    flags = flags or {}
    slices = axial_slices(mask, n_slices)
    box = bounding_box(mask)
    cmap = mpl.colormaps[MAP_CMAP].with_extremes(bad="black")
    flag_cmap = ListedColormap([FLAG_COLOUR])
    planes = [
        stitch_slices(np.where(mask, volume, np.nan), slices, box) for volume in maps.values()
    ]
    aspect = _plane_aspect(planes[0], zooms)
    figure, grid = _mosaic_figure(len(maps), aspect, with_colorbar=True, title=title)
    low, high = value_range
    for row, (name, stitched) in enumerate(zip(maps, planes, strict=True)):
        axes = figure.add_subplot(grid[row, 0])
        image = _show_plane(axes, stitched, zooms, cmap=cmap, vmin=low, vmax=high)
        if name in flags:
            flagged = stitch_slices(np.asarray(flags[name], bool) & mask, slices, box, fill=0)
            _show_plane(axes, np.where(flagged > 0, 1.0, np.nan), zooms, cmap=flag_cmap)
        axes.set_ylabel(PARAMETER_NAMES.get(name, name), color="white")
        colorbar = figure.colorbar(image, cax=figure.add_subplot(grid[row, 1]))
        colorbar.set_ticks([low, (low + high) / 2, high])
        colorbar.ax.tick_params(colors="white", labelsize=7)
    return _to_png(figure)


def mask_mosaic(
    reference: np.ndarray,
    zooms: Sequence[float],
    brain_mask: np.ndarray | None = None,
    tissue_masks: Mapping[str, np.ndarray] | None = None,
    *,
    n_slices: int = 8,
    title: str | None = None,
) -> bytes:
    """Axial slices of the mean b = 0 image with the brain mask and the tissue masks overlaid.

    Row 1 draws the brain-mask outline; row 2 (when tissue masks are given) fills each tissue
    with its colour (:data:`TISSUE_COLOURS`) at 50 % opacity, with a legend.

    Parameters
    ----------
    reference : numpy.ndarray
        Mean b = 0 image, 3-D, RAS+.
    zooms : sequence of float
        Voxel sizes, mm.
    brain_mask : numpy.ndarray, optional
        Brain mask (boolean).
    tissue_masks : mapping, optional
        Tissue (``WM``, ``GM``, ``CSF``) -> boolean mask.
    n_slices : int
        Number of axial slices.
    title : str, optional
        Figure title.

    Returns
    -------
    bytes
        PNG image; the grey scale spans the 1st to 99.5th percentile within the brain mask.
    """
    tissue_masks = dict(tissue_masks or {})
    extent = np.asarray(brain_mask, bool) if brain_mask is not None else reference > 0
    slices = axial_slices(extent, n_slices)
    box = bounding_box(extent)
    inside = reference[extent] if extent.any() else reference.ravel()
    low, high = np.percentile(inside, [1.0, 99.5]) if inside.size else (0.0, 1.0)
    high = high if high > low else low + 1.0
    background = stitch_slices(reference, slices, box)
    rows = 1 + bool(tissue_masks)
    aspect = _plane_aspect(background, zooms)
    figure, grid = _mosaic_figure(rows, aspect, with_colorbar=False, title=title)
    outline = figure.add_subplot(grid[0, 0])
    _show_plane(outline, background, zooms, cmap="gray", vmin=low, vmax=high)
    if brain_mask is not None:
        plane = stitch_slices(np.asarray(brain_mask, float), slices, box, fill=0.0)
        if plane.any() and not plane.all():
            outline.contour(plane, levels=[0.5], colors=[MASK_COLOUR], linewidths=0.8)
    if tissue_masks:
        filled = figure.add_subplot(grid[1, 0])
        _show_plane(filled, background, zooms, cmap="gray", vmin=low, vmax=high)
        for tissue, tissue_mask in tissue_masks.items():
            plane = stitch_slices(np.asarray(tissue_mask, float), slices, box, fill=0.0)
            colour = ListedColormap([TISSUE_COLOURS.get(tissue, "#bbbbbb")])
            _show_plane(
                filled,
                np.where(plane > 0, 1.0, np.nan),
                zooms,
                cmap=colour,
                vmin=0.0,
                vmax=1.0,
                alpha=0.5,
            )
    handles = []
    if brain_mask is not None:
        handles.append(Line2D([], [], color=MASK_COLOUR, label="brain mask"))
    handles.extend(
        Patch(color=TISSUE_COLOURS.get(t, "#bbbbbb"), alpha=0.5, label=t) for t in tissue_masks
    )
    if handles:
        figure.legend(
            handles=handles,
            loc="lower center",
            ncol=len(handles),
            frameon=False,
            labelcolor="white",
            fontsize=9,
        )
    return _to_png(figure)


def estimator_scatter(
    x: Mapping[str, Mapping[str, np.ndarray]],
    y: Mapping[str, Mapping[str, np.ndarray]],
    x_label: str,
    y_label: str,
    parameters: Mapping[str, Sequence[str]],
    *,
    max_points: int = 4000,
    seed: int = 0,
) -> str:
    """Voxel-wise scatter of one estimator against another, per tissue and parameter.

    One row per tissue, one column per parameter, axes [0, 1] with the identity line (the
    shape of the study's NN-vs-MLE figure). Each panel shows at most ``max_points`` voxels,
    drawn at random (seeded) when the tissue has more; the title gives the number of voxels
    and Pearson's r over all of them.

    Parameters
    ----------
    x, y : mapping
        Tissue -> parameter -> 1-D values of the same voxels (x on the horizontal axis).
    x_label, y_label : str
        Names of the two estimators.
    parameters : mapping
        Tissue -> parameters to show (e.g. CSF: FWF only).
    max_points : int
        Most points drawn per panel.
    seed : int
        Seed of the subsampling.

    Returns
    -------
    str
        SVG document (points rasterised to keep it small).
    """
    tissues = [t for t in x if t in y]
    columns = list(dict.fromkeys(p for t in tissues for p in parameters.get(t, ())))
    rng = np.random.default_rng(seed)
    figure, grid = _panel_grid(len(tissues), len(columns), 2.3, 2.3)
    for row, tissue in enumerate(tissues):
        for column, parameter in enumerate(columns):
            axes = grid[row, column]
            if parameter not in parameters.get(tissue, ()):
                _blank_panel(
                    axes, f"{PARAMETER_NAMES.get(parameter, parameter)}\nnot reported\nfor {tissue}"
                )
                continue
            xs = np.asarray(x[tissue][parameter], float)
            ys = np.asarray(y[tissue][parameter], float)
            finite = np.isfinite(xs) & np.isfinite(ys)
            xs, ys = xs[finite], ys[finite]
            shown = np.arange(xs.size)
            if xs.size > max_points:
                shown = np.sort(rng.choice(xs.size, max_points, replace=False))
            axes.scatter(
                xs[shown],
                ys[shown],
                s=3,
                alpha=0.35,
                color=TISSUE_COLOURS.get(tissue, "#555555"),
                linewidths=0,
                rasterized=True,
            )
            axes.plot(MAP_RANGE, MAP_RANGE, color="black", linestyle="--", linewidth=0.8)
            axes.set_xlim(MAP_RANGE)
            axes.set_ylim(MAP_RANGE)
            axes.set_aspect("equal")
            axes.tick_params(labelsize=7)
            name = PARAMETER_NAMES.get(parameter, parameter)
            axes.set_title(f"{tissue} {name}: n={xs.size}, r={_pearson(xs, ys)}", fontsize=8)
            axes.set_xlabel(f"{x_label} {name}", fontsize=8)
            axes.set_ylabel(f"{y_label} {name}", fontsize=8)
    return _to_svg(figure)


def tissue_histograms(
    values: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    parameters: Mapping[str, Sequence[str]],
    *,
    bins: int = 40,
) -> str:
    """Histograms of each parameter within each tissue, one outline per estimator.

    Parameters
    ----------
    values : mapping
        Estimator (``desc-`` label) -> tissue -> parameter -> 1-D values.
    parameters : mapping
        Tissue -> parameters to show.
    bins : int
        Number of bins over [0, 1].

    Returns
    -------
    str
        SVG document. Histograms are normalised to unit area, so tissues of different sizes
        compare.
    """
    tissues = list(dict.fromkeys(t for per_tissue in values.values() for t in per_tissue))
    columns = list(dict.fromkeys(p for t in tissues for p in parameters.get(t, ())))
    edges = np.linspace(*MAP_RANGE, bins + 1)
    figure, grid = _panel_grid(len(tissues), len(columns), 2.6, 1.7, legend=True)
    for row, tissue in enumerate(tissues):
        for column, parameter in enumerate(columns):
            axes = grid[row, column]
            name = PARAMETER_NAMES.get(parameter, parameter)
            if parameter not in parameters.get(tissue, ()):
                _blank_panel(axes, f"{name} not reported for {tissue}")
                continue
            for estimator, per_tissue in values.items():
                data = np.asarray(per_tissue.get(tissue, {}).get(parameter, []), float)
                data = data[np.isfinite(data)]
                if data.size == 0:
                    continue
                axes.hist(
                    np.clip(data, *MAP_RANGE),
                    bins=edges,
                    density=True,
                    histtype="step",
                    linewidth=1.2,
                    color=ESTIMATOR_COLOURS.get(estimator, None),
                    label=estimator_name(estimator),
                )
            axes.set_xlim(MAP_RANGE)
            axes.set_title(f"{tissue} {name}", fontsize=8)
            axes.tick_params(labelsize=7)
            axes.set_yticks([])
    handles = [
        Line2D([], [], color=ESTIMATOR_COLOURS.get(e, None), label=estimator_name(e))
        for e in values
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    return _to_svg(figure)


def group_figure(long: pd.DataFrame, parameters: Mapping[str, Sequence[str]]) -> str:
    """Per tissue and parameter: one point per run and estimator, with the group mean and SD.

    Parameters
    ----------
    long : pandas.DataFrame
        Long table with columns ``tissue``, ``estimator``, ``parameter`` and ``mean`` (one row
        per run, tissue, estimator and parameter), as in ``group_tissue_stats.tsv``.
    parameters : mapping
        Tissue -> parameters to show.

    Returns
    -------
    str
        SVG document. Points are spread horizontally (fixed offsets, no randomness) around
        each estimator's position; the black bar and whiskers are the mean and the sample SD
        (ddof 1) of the points.
    """
    tissues = [t for t in parameters if t in set(long["tissue"])]
    tissues += [t for t in dict.fromkeys(long["tissue"]) if t not in tissues]
    columns = list(dict.fromkeys(p for t in tissues for p in parameters.get(t, ())))
    estimators = list(dict.fromkeys(long["estimator"]))
    figure, grid = _panel_grid(len(tissues), len(columns), 2.8, 2.2)
    for row, tissue in enumerate(tissues):
        for column, parameter in enumerate(columns):
            axes = grid[row, column]
            name = PARAMETER_NAMES.get(parameter, parameter)
            if parameter not in parameters.get(tissue, ()):
                _blank_panel(axes, f"{name} not reported for {tissue}")
                continue
            cell = long[(long["tissue"] == tissue) & (long["parameter"] == parameter)]
            for position, estimator in enumerate(estimators):
                points = cell.loc[cell["estimator"] == estimator, "mean"].to_numpy(float)
                points = points[np.isfinite(points)]
                if points.size == 0:
                    continue
                offsets = np.linspace(-0.18, 0.18, points.size) if points.size > 1 else [0.0]
                colour = ESTIMATOR_COLOURS.get(estimator, None)
                axes.scatter(
                    position + np.asarray(offsets),
                    points,
                    s=14,
                    color=colour,
                    alpha=0.8,
                    linewidths=0,
                    zorder=2,
                )
                sd = float(np.std(points, ddof=1)) if points.size > 1 else 0.0
                axes.errorbar(
                    position,
                    float(np.mean(points)),
                    yerr=sd,
                    fmt="_",
                    color="black",
                    markersize=18,
                    capsize=4,
                    linewidth=1.2,
                    zorder=3,
                )
            axes.set_xticks(range(len(estimators)))
            axes.set_xticklabels([estimator_name(e) for e in estimators], fontsize=7)
            axes.set_xlim(-0.6, len(estimators) - 0.4)
            axes.set_ylim(MAP_RANGE)
            axes.set_title(f"{tissue} {name}", fontsize=9)
            axes.tick_params(labelsize=7)
    return _to_svg(figure)


def _blank_panel(axes, text: str) -> None:
    axes.set_axis_off()
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color="0.4")


def _pearson(x: np.ndarray, y: np.ndarray) -> str:
    if x.size < 2 or np.std(x) == 0 or np.std(y) == 0:
        return "n/a"
    return f"{np.corrcoef(x, y)[0, 1]:.2f}"


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(max(width, 3.0), max(height, 2.0)))
    FigureCanvasAgg(figure)
    return figure


def _panel_grid(rows: int, columns: int, width: float, height: float, *, legend: bool = False):
    """Figure with a grid of axes of ``width`` x ``height`` inches each (fixed margins)."""
    left, right, top, bottom = 0.25, 0.15, 0.1, 0.2 + (0.35 if legend else 0.0)
    total_width = columns * width + left + right
    total_height = rows * height + top + bottom
    figure = _figure(total_width, total_height)
    grid = figure.subplots(
        rows,
        columns,
        squeeze=False,
        gridspec_kw={
            "left": (left + 0.45) / total_width,
            "right": 1 - right / total_width,
            "top": 1 - (top + 0.25) / total_height,
            "bottom": (bottom + 0.4) / total_height,
            "wspace": 0.45,
            "hspace": 0.6,
        },
    )
    return figure, grid


def _plane_aspect(plane: np.ndarray, zooms: Sequence[float]) -> float:
    """Width / height of a stitched plane drawn with its voxel sizes."""
    return plane.shape[1] * zooms[0] / (plane.shape[0] * zooms[1])


def _mosaic_figure(rows: int, aspect: float, *, with_colorbar: bool, title: str | None):
    """Figure for ``rows`` stitched planes of ``aspect`` (width / height), one per row."""
    top, bottom, left, right = (0.4 if title else 0.1), 0.35, 0.4, (0.45 if with_colorbar else 0.2)
    colorbar = 0.25 if with_colorbar else 0.0  # colour bar and its gap, inches
    width = aspect * _PANEL_INCHES + colorbar + left + right
    height = rows * _PANEL_INCHES + top + bottom
    figure = _figure(width, height)
    figure.set_facecolor("black")
    ratios = [aspect * _PANEL_INCHES] + ([0.12] if with_colorbar else [])
    grid = figure.add_gridspec(
        rows,
        len(ratios),
        width_ratios=ratios,
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=0.02,
        hspace=0.12,
    )
    if title:
        figure.suptitle(title, color="white", fontsize=11)
    return figure, grid


def _show_plane(axes, plane: np.ndarray, zooms: Sequence[float], **style):
    image = axes.imshow(
        plane, origin="lower", aspect=zooms[1] / zooms[0], interpolation="nearest", **style
    )
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.set_facecolor("black")
    return image


def _to_png(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor=figure.get_facecolor())
    return buffer.getvalue()


def _to_svg(figure: Figure) -> str:
    buffer = io.StringIO()
    with mpl.rc_context(_SVG_RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, dpi=100)
    return buffer.getvalue()
