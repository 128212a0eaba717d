"""What a NODDI network file records about itself, and the errors of loading and matching one.

The metadata travels inside the ONNX file (``metadata_props`` key :data:`METADATA_KEY`, one JSON
document), so a model file is self-describing: what its inputs are (the rotation-invariant
features of a set of shells, or the raw signals of one exact scheme), the fixed diffusivities,
the label type, the SNR and the training settings. This module needs neither torch nor ONNX
Runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from noddi_bids.model.scheme import Scheme, SchemeError
from noddi_bids.nn.features import FeatureSpec

#: ``metadata_props`` key holding the JSON metadata.
METADATA_KEY = "noddi_bids"
#: Version of the metadata layout (1: raw-signal networks only; 2: adds ``features``).
FORMAT_VERSION = 2


class ModelError(ValueError):
    """An ONNX file that cannot be read or is not a noddi-bids NODDI network."""


class SchemeMismatchError(ValueError):
    """The data's acquisition scheme differs from the scheme a network was trained on."""


@dataclass(frozen=True)
class ModelMetadata:
    """Description of a trained NODDI network.

    Attributes
    ----------
    scheme : Scheme or None
        Raw-signal networks: the acquisition scheme of the training data (input order = volume
        order). None for rotation-invariant networks.
    b0_threshold : float
        b-values at or below this (s/mm^2) were b = 0 when normalising the input.
    d_par, d_iso : float
        Fixed intra-neurite parallel and free-water diffusivities, mm^2/s.
    labels : str
        Label type: ``"mle"``, ``"gt"`` or ``"hybrid"``.
    parameters : tuple of str
        Output order, ``("odi", "ndi", "fwf")``.
    snr : float or list of float
        Training SNR (constant, or ``[low, high]``).
    training : dict
        Training settings and results (samples, seed, limits, epochs, losses, ...).
    version : str
        noddi-bids version that trained the network.
    features : FeatureSpec or None
        Rotation-invariant networks: shells, orders and trained ranges of their inputs.
    spread : bool
        The network also outputs, after the parameters, the standard deviation of each one's
        error against the truth (its uncertainty), so the output has twice the columns.
    """

    scheme: Scheme | None
    b0_threshold: float
    d_par: float
    d_iso: float
    labels: str
    parameters: tuple[str, ...] = ("odi", "ndi", "fwf")
    snr: float | list[float] = 15.0
    training: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    features: FeatureSpec | None = None
    spread: bool = False

    def __post_init__(self) -> None:
        if (self.scheme is None) == (self.features is None):
            raise ValueError("a network has either a scheme (raw signals) or features, not both")

    @property
    def inputs(self) -> str:
        """``"invariant"`` (features of shells) or ``"signal"`` (raw signals of one scheme)."""
        return "signal" if self.features is None else "invariant"

    @property
    def n_outputs(self) -> int:
        """Width of the network output (parameters, then their SDs when :attr:`spread`)."""
        return len(self.parameters) * (2 if self.spread else 1)

    @property
    def n_inputs(self) -> int:
        """Width of the network input."""
        return self.scheme.n_measurements if self.features is None else self.features.n_features

    def describe(self) -> str:
        """One line: what the network applies to."""
        if self.features is None:
            return f"raw signals of {self.scheme.summary()} (hash {self.scheme.hash})"
        shells = "/".join(f"{b:g}" for b in self.features.shells)
        return f"rotation-invariant features of shells b = {shells} s/mm^2"

    def to_json(self) -> str:
        """Serialise to the JSON document stored in the ONNX file."""
        document = {
            "format": FORMAT_VERSION,
            "inputs": self.inputs,
            "scheme": None if self.scheme is None else self.scheme.to_dict(),
            "features": None if self.features is None else self.features.to_dict(),
            "spread": self.spread,
            "b0_threshold": self.b0_threshold,
            "d_par": self.d_par,
            "d_iso": self.d_iso,
            "labels": self.labels,
            "parameters": list(self.parameters),
            "snr": self.snr,
            "training": self.training,
            "version": self.version,
        }
        return json.dumps(document, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ModelMetadata:
        """Parse :meth:`to_json` output.

        Parameters
        ----------
        text : str
            JSON document.
        source : str
            Name used in error messages (the file).

        Returns
        -------
        ModelMetadata

        Raises
        ------
        ModelError
            If the document is not valid JSON, lacks a field or holds an invalid scheme.
        """
        try:
            document = json.loads(text)
            features = document.get("features")
            scheme = document["scheme"]
            return cls(
                scheme=None if scheme is None else Scheme.from_dict(scheme),
                features=None if features is None else FeatureSpec.from_dict(features),
                spread=bool(document.get("spread", False)),
                b0_threshold=float(document["b0_threshold"]),
                d_par=float(document["d_par"]),
                d_iso=float(document["d_iso"]),
                labels=str(document["labels"]),
                parameters=tuple(document["parameters"]),
                snr=document["snr"],
                training=dict(document["training"]),
                version=str(document["version"]),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, SchemeError) as err:
            raise ModelError(
                f"{source}: the noddi-bids metadata is unreadable or incomplete ({err!r}); "
                "re-export the network with noddi-bids-train."
            ) from err
