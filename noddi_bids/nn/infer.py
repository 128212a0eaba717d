"""Apply a trained NODDI network with ONNX Runtime (no PyTorch on this path).

:class:`OnnxEstimator` opens a network file, reads and validates its metadata, checks a data
set's scheme against the scheme the network was trained on (:meth:`OnnxEstimator.check_scheme`),
and estimates ODI, NDI and FWF from signals normalised by their mean b = 0, in chunks.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from pathlib import Path

import numpy as np
import onnxruntime as ort

from noddi_bids.model.scheme import Scheme
from noddi_bids.nn.metadata import METADATA_KEY, ModelError, ModelMetadata, SchemeMismatchError

__all__ = ["ModelError", "ModelMetadata", "OnnxEstimator", "SchemeMismatchError", "read_metadata"]

#: Voxels per ONNX Runtime call. Small enough that a layer's activations (2048 x 120 float32,
#: 1 MB) stay in cache: on 2 cores 2048 ran 1.1 M voxels/s against 0.75 M at 65,536
#: (docs/benchmarks.md); the per-call overhead is negligible at this size.
CHUNK_SIZE = 2048


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _session(path: Path, n_threads: int | None) -> ort.InferenceSession:
    if not path.is_file():
        raise ModelError(f"{path}: model file not found.")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if n_threads:
        options.intra_op_num_threads = int(n_threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises its own exception types per failure
        raise ModelError(
            f"{path}: not a readable ONNX model ({type(err).__name__}: {str(err)[:200]}); "
            "the file is corrupt or truncated. Re-download it or train one with noddi-bids-train."
        ) from err


def _metadata(session: ort.InferenceSession, path: Path) -> ModelMetadata:
    properties = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in properties:
        raise ModelError(
            f"{path}: ONNX model without noddi-bids metadata (key {METADATA_KEY!r}); it was not "
            "exported by noddi-bids-train, so its scheme is unknown."
        )
    metadata = ModelMetadata.from_json(properties[METADATA_KEY], str(path))
    inputs, outputs = session.get_inputs(), session.get_outputs()
    n_inputs = inputs[0].shape[-1] if len(inputs) == 1 and len(inputs[0].shape) == 2 else None
    if n_inputs != metadata.scheme.n_measurements:
        raise ModelError(
            f"{path}: network input {[i.shape for i in inputs]} does not fit its metadata "
            f"scheme of {metadata.scheme.n_measurements} volumes."
        )
    if len(outputs) != 1 or outputs[0].shape[-1] != len(metadata.parameters):
        raise ModelError(
            f"{path}: network output {[o.shape for o in outputs]} does not give the "
            f"{len(metadata.parameters)} parameters {metadata.parameters}."
        )
    return metadata


def read_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read and validate the metadata of a network file.

    Parameters
    ----------
    path : str or path-like
        ONNX file written by ``noddi-bids-train``.

    Returns
    -------
    ModelMetadata

    Raises
    ------
    ModelError
        If the file is missing, unreadable, or not a noddi-bids network.
    """
    path = Path(path)
    return _metadata(_session(path, 1), path)


class OnnxEstimator:
    """NODDI network applied with ONNX Runtime.

    Parameters
    ----------
    path : str or path-like
        ONNX file written by ``noddi-bids-train`` (or a shipped model).
    n_threads : int, optional
        ONNX Runtime intra-op threads (default: ONNX Runtime's choice, all cores).

    Attributes
    ----------
    path : Path
        The model file.
    metadata : ModelMetadata
        Scheme, diffusivities, labels, SNR and training record.
    sha256 : str
        SHA-256 checksum of the file.

    Raises
    ------
    ModelError
        If the file is missing, corrupt or not a noddi-bids network.
    """

    def __init__(self, path: str | os.PathLike[str], n_threads: int | None = None) -> None:
        self.path = Path(path)
        self._session = _session(self.path, n_threads)
        self.metadata = _metadata(self._session, self.path)
        self.sha256 = _sha256(self.path)
        self._input = self._session.get_inputs()[0].name

    def __repr__(self) -> str:
        return (
            f"OnnxEstimator({self.path.name}, labels={self.metadata.labels}, "
            f"scheme={self.metadata.scheme.hash})"
        )

    def check_scheme(self, scheme: Scheme) -> None:
        """Check that `scheme` is the protocol the network was trained on.

        Same number of volumes, b-values within tolerance, b-vectors equal up to sign, same
        volume order.

        Parameters
        ----------
        scheme : Scheme
            Scheme of the data to estimate.

        Raises
        ------
        SchemeMismatchError
            Naming what differs and how to train a matching network.
        """
        ok, reason = self.metadata.scheme.matches(scheme)
        if ok:
            return
        labels = self.metadata.labels
        command = shlex.join(
            ["noddi-bids-train", "--bval", "DWI.bval", "--bvec", "DWI.bvec", "--labels", labels]
            + ["--out", f"nn-{labels}_{scheme.hash}.onnx"]
        )
        raise SchemeMismatchError(
            f"The data's scheme ({scheme.summary()}, hash {scheme.hash}) does not match the "
            f"scheme of network {self.path} ({self.metadata.scheme.summary()}, hash "
            f"{self.metadata.scheme.hash}): {reason}. A network only applies to the protocol it "
            f"was trained on. Train a matching one with `{command}` (the data's bval/bvec "
            "files), or use --model auto to train and cache one automatically."
        )

    def predict(self, signals: np.ndarray, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
        """Estimate ODI, NDI and FWF.

        Parameters
        ----------
        signals : ndarray, shape (N, M)
            Signals normalised by their mean b = 0, volumes in the scheme's order.
        chunk_size : int
            Voxels per ONNX Runtime call.

        Returns
        -------
        ndarray of float64, shape (N, 3)
            Columns in ``metadata.parameters`` order (ODI, NDI, FWF), each in [0, 1].
        """
        signals = np.asarray(signals)
        n_meas = self.metadata.scheme.n_measurements
        if signals.ndim != 2 or signals.shape[1] != n_meas:
            raise ValueError(
                f"signals must have shape (voxels, {n_meas}) for {self.path.name}, "
                f"got {signals.shape}"
            )
        out = np.empty((signals.shape[0], len(self.metadata.parameters)), dtype=np.float64)
        for start in range(0, signals.shape[0], chunk_size):
            chunk = np.ascontiguousarray(signals[start : start + chunk_size], dtype=np.float32)
            out[start : start + chunk.shape[0]] = self._session.run(None, {self._input: chunk})[0]
        return out
