"""One vocabulary: how noddi-bids names NODDI parameters, estimators and tissues in its outputs.

Every spelling is written here once, and every output takes it from here:

- a parameter has a name in noddi-bids (``odi``, ``ndi``, ``fwf``, ``direction``: keys in code,
  table columns such as ``odi_mean``), a BIDS ``param-`` label from the diffusion-derivatives
  proposal (``od``, ``icvf``, ``isovf``, ``direction``: file names, DICOM folders), a display
  name (``ODI``: reports, DICOM series), words, a sidecar description and units; so have the
  goodness-of-fit maps of an estimate (``rmse``, ``nrmse``, as QSIRecon names AMICO's) and the
  voxel flags it writes as masks (``outofmodel``) and its tissue-fraction-modulated maps
  (``odi_modulated``, ``ndi_modulated``: ``param-odmodulated``, ``param-icvfmodulated``); a
  statistic of an estimate (its standard deviation) has a ``stat-`` label (``sd``);
- a model variant has a BIDS ``model-`` label (``noddi``; ``gmnoddi``, QSIRecon's grey-matter
  NODDI) and a display name (``Model`` of the sidecars);
- an estimator has a BIDS ``desc-`` label (``nnmle``, ``nngt``, ``nnhybrid``, ``mle``: file names,
  tables, DICOM folders), a display name (the study's ``NN_MLE``: reports), a DICOM name (the
  display name with hyphens, ``NN-MLE``, since underscores separate the parts of the DICOM file
  names) and words; a network's estimator follows from the label type it was trained on
  (``mle``, ``gt``, ``hybrid``, recorded in the ONNX file);
- a tissue has a ``label-`` value (``WM``, ``GM``, ``CSF``) and words.

It imports nothing from noddi-bids, so that every layer may use it.

Examples
--------
>>> ESTIMATORS[NETWORK_ESTIMATORS["hybrid"]].dicom
'NN-hybrid'
>>> [MAPS[name].label for name in PARAMETERS]
['od', 'icvf', 'isovf']
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Parameter:
    """A map an estimator writes.

    Attributes
    ----------
    name : str
        Name in noddi-bids (code, table columns).
    label : str
        BIDS ``param-`` label (diffusion-derivatives proposal, as QSIRecon writes it).
    display : str
        Display name (reports, DICOM series).
    words : str
        The parameter in words, lower case.
    description : str
        ``Description`` of the map's sidecar.
    units : str
        BIDS units of its values.
    """

    name: str
    label: str
    display: str
    words: str
    description: str
    units: str

    @property
    def title(self) -> str:
        """Words with the display name, e.g. ``orientation dispersion index (ODI)``."""
        return f"{self.words} ({self.display})"


@dataclass(frozen=True)
class Estimator:
    """An estimator of NODDI maps.

    Attributes
    ----------
    label : str
        BIDS ``desc-`` label of its maps.
    display : str
        Display name (the study's names: reports, figures).
    words : str
        What it is, lower case.
    training : str or None
        Label type a network was trained on (``mle``, ``gt``, ``hybrid``); None for the fit.
    """

    label: str
    display: str
    words: str
    training: str | None = None

    @property
    def dicom(self) -> str:
        """Name in DICOM series descriptions and file names (``NN-MLE``)."""
        return self.display.replace("_", "-")

    @property
    def description(self) -> str:
        """Words with the display name (``EstimatorDescription`` of the sidecars)."""
        return f"{self.words} ({self.display})"


#: Every map an estimator writes, by name, in output order.
MAPS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter(
            "odi",
            "od",
            "ODI",
            "orientation dispersion index",
            "Orientation dispersion index (ODI), (2/pi) arctan(1/kappa)",
            "arbitrary",
        ),
        Parameter(
            "ndi",
            "icvf",
            "NDI",
            "neurite density index",
            "Neurite density index (NDI, intra-neurite volume fraction of tissue)",
            "fraction",
        ),
        Parameter(
            "fwf",
            "isovf",
            "FWF",
            "free-water fraction",
            "Free-water fraction (FWF, isotropic volume fraction)",
            "fraction",
        ),
        Parameter(
            "direction",
            "direction",
            "direction",
            "mean fibre orientation",
            "Mean fibre orientation, unit vector in the b-vector frame (image axes)",
            "arbitrary",
        ),
    )
}
#: The scalar NODDI parameters (tables, DICOM series, figures), in order.
PARAMETERS = ("odi", "ndi", "fwf")
#: Tissue-fraction-modulated maps of an estimate (QSIRecon's ``desc-modulated``: the parameter
#: times the tissue fraction 1 - FWF), by name, in order.
MODULATED_MAPS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter(
            "odi_modulated",
            "odmodulated",
            "ODI x (1 - FWF)",
            "tissue-fraction-modulated orientation dispersion index",
            "Orientation dispersion index multiplied by the tissue fraction 1 - FWF (QSIRecon's "
            "modulated OD)",
            "arbitrary",
        ),
        Parameter(
            "ndi_modulated",
            "icvfmodulated",
            "NDI x (1 - FWF)",
            "tissue-fraction-modulated neurite density index",
            "Neurite density index multiplied by the tissue fraction 1 - FWF (QSIRecon's "
            "modulated ICVF: the intra-neurite volume fraction of the voxel)",
            "fraction",
        ),
    )
}
#: Parameter each modulated map is made from.
MODULATED_FROM = {"odi_modulated": "odi", "ndi_modulated": "ndi"}
#: Goodness-of-fit maps of an estimate (:mod:`noddi_bids.qc.residuals`), by name, in order.
QUALITY_MAPS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter(
            "rmse",
            "rmse",
            "RMSE",
            "root-mean-square error of the predicted signal",
            "Root-mean-square difference, over all volumes, between the measured signal and "
            "the signal the estimate predicts (forward model, S0, fibre direction), in the "
            "units of the dwi image",
            "arbitrary",
        ),
        Parameter(
            "nrmse",
            "nrmse",
            "NRMSE",
            "normalised root-mean-square error of the predicted signal",
            "RMSE divided by the voxel's mean b = 0 signal",
            "fraction",
        ),
    )
}
#: Voxel flags an estimate writes as masks (``model-noddi_param-<label>_desc-<est>_mask``).
FLAGS: dict[str, Parameter] = {
    p.name: p
    for p in (
        Parameter(
            "outofmodel",
            "outofmodel",
            "out of model",
            "voxels the model does not fit",
            "Voxels whose NRMSE exceeds OutOfModelRatio times the local noise level of the "
            "normalised signal (the model does not explain the signal)",
            "boolean",
        ),
        Parameter(
            "singular",
            "singular",
            "singular information",
            "voxels without an uncertainty",
            "Fitted voxels whose Fisher information is singular for ODI, NDI or FWF (a "
            "parameter the data say nothing about at the estimate): no standard deviation",
            "boolean",
        ),
    )
}
#: Statistics of an estimate written beside its maps (``stat-<label>``), label -> words.
STATISTICS = {"sd": "standard deviation"}
#: Every map and flag an estimator writes, by name.
ALL_MAPS: dict[str, Parameter] = {**MAPS, **MODULATED_MAPS, **QUALITY_MAPS, **FLAGS}
#: ``param-`` label -> name of a map or flag.
PARAMETER_OF_LABEL = {p.label: p.name for p in ALL_MAPS.values()}

@dataclass(frozen=True)
class Model:
    """A variant of the NODDI model an estimator fits (its ``model-`` label).

    Attributes
    ----------
    label : str
        BIDS ``model-`` label of its maps.
    display : str
        Display name (``Model`` of the sidecars, reports).
    words : str
        What it is, lower case.
    """

    label: str
    display: str
    words: str


#: NODDI variants by ``model-`` label: the model of ``--dpar`` first, then QSIRecon's
#: grey-matter NODDI (``--gm-noddi``, d_par 1.1e-3 mm^2/s: :data:`noddi_bids.model.noddi.GM_D_PAR`).
MODELS: dict[str, Model] = {
    m.label: m
    for m in (
        Model("noddi", "NODDI", "NODDI with the intra-neurite diffusivity of --dpar"),
        Model(
            "gmnoddi",
            "gmNODDI",
            "grey-matter NODDI: intra-neurite diffusivity 1.1e-3 mm^2/s (QSIRecon's gmNODDI)",
        ),
    )
}
#: ``model-`` label of the model of ``--dpar``, and of the grey-matter variant.
NODDI, GM_NODDI = MODELS

#: Every estimator by ``desc-`` label: the networks first, then the fit.
ESTIMATORS: dict[str, Estimator] = {
    e.label: e
    for e in (
        Estimator("nnmle", "NN_MLE", "neural network trained on maximum-likelihood labels", "mle"),
        Estimator("nngt", "NN_GT", "neural network trained on ground-truth labels", "gt"),
        Estimator(
            "nnhybrid",
            "NN_hybrid",
            "neural network trained on a mix of MLE and ground-truth labels",
            "hybrid",
        ),
        Estimator("mle", "MLE", "conventional Rician maximum-likelihood fit"),
    )
}
#: Label type a network was trained on -> ``desc-`` label of its maps.
NETWORK_ESTIMATORS = {e.training: e.label for e in ESTIMATORS.values() if e.training}
#: ``desc-`` label of the maximum-likelihood fit.
MLE = "mle"

#: Tissue classes (``label-`` values of the masks) in table order, and in words.
TISSUE_NAMES = {"WM": "white matter", "GM": "grey matter", "CSF": "cerebrospinal fluid"}
TISSUES = tuple(TISSUE_NAMES)


def estimator(label: str) -> Estimator:
    """Return the estimator of a ``desc-`` label.

    Raises
    ------
    ValueError
        If the label is not one of :data:`ESTIMATORS`, naming them.
    """
    try:
        return ESTIMATORS[label]
    except KeyError:
        raise ValueError(
            f"Unknown estimator {label!r}; expected one of {list(ESTIMATORS)}."
        ) from None


def parameter(key: str) -> Parameter:
    """Return the map or flag of a name or ``param-`` label (``odi`` or ``od``, ``nrmse``).

    Raises
    ------
    ValueError
        If ``key`` is neither, naming the labels.
    """
    name = PARAMETER_OF_LABEL.get(key, key)
    try:
        return ALL_MAPS[name]
    except KeyError:
        raise ValueError(f"Unknown parameter {key!r}; expected one of {list(ALL_MAPS)} or "
                         f"{list(PARAMETER_OF_LABEL)}.") from None  # fmt: skip
