"""What a NODDI network file records about itself, and the errors of loading and matching one.

The metadata travels inside the ONNX file (``metadata_props`` key :data:`METADATA_KEY`, one JSON
document), so a model file is self-describing: the scheme it was trained for, the fixed
diffusivities, the label type, the SNR and the training settings. This module needs neither
torch nor ONNX Runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from noddi_bids.model.scheme import Scheme, SchemeError

#: ``metadata_props`` key holding the JSON metadata.
METADATA_KEY = "noddi_bids"
#: Version of the metadata layout.
FORMAT_VERSION = 1


class ModelError(ValueError):
    """An ONNX file that cannot be read or is not a noddi-bids NODDI network."""


class SchemeMismatchError(ValueError):
    """The data's acquisition scheme differs from the scheme a network was trained on."""


@dataclass(frozen=True)
class ModelMetadata:
    """Description of a trained NODDI network.

    Attributes
    ----------
    scheme : Scheme
        Acquisition scheme of the training data (input order = volume order).
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
    """

    scheme: Scheme
    b0_threshold: float
    d_par: float
    d_iso: float
    labels: str
    parameters: tuple[str, ...] = ("odi", "ndi", "fwf")
    snr: float | list[float] = 15.0
    training: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    def to_json(self) -> str:
        """Serialise to the JSON document stored in the ONNX file."""
        document = {
            "format": FORMAT_VERSION,
            "scheme": self.scheme.to_dict(),
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
            scheme = Scheme.from_dict(document["scheme"])
            return cls(
                scheme=scheme,
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
