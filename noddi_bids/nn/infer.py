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
from noddi_bids.nn.features import FeatureError, ShellDesign, design
from noddi_bids.nn.metadata import METADATA_KEY, ModelError, ModelMetadata, SchemeMismatchError

__all__ = ["ModelError", "ModelMetadata", "OnnxEstimator", "SchemeMismatchError", "read_metadata"]

#: Voxels per ONNX Runtime call. Small enough that a layer's activations (2048 x 120 float32,
#: 1 MB) stay in cache: on 2 cores 2048 ran 1.1 M voxels/s against 0.75 M at 65,536
#: (docs/benchmarks.md); the per-call overhead is negligible at this size.
CHUNK_SIZE = 2048
#: Voxels whose features are computed together (NumPy's per-call overhead dominates below
#: ~10,000 voxels: 0.42 M voxels/s in blocks of 2048 against 1.27 M in blocks of 65,536).
FEATURE_BLOCK = 65_536


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
    if n_inputs != metadata.n_inputs:
        raise ModelError(
            f"{path}: network input {[i.shape for i in inputs]} does not fit its metadata "
            f"({metadata.n_inputs} inputs: {metadata.describe()})."
        )
    if len(outputs) != 1 or outputs[0].shape[-1] != metadata.n_outputs:
        raise ModelError(
            f"{path}: network output {[o.shape for o in outputs]} does not give the "
            f"{metadata.n_outputs} columns of {metadata.parameters}"
            f"{' and their SDs' if metadata.spread else ''}."
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
            f"inputs={self.metadata.describe()})"
        )

    def check_scheme(self, scheme: Scheme) -> None:
        """Check that the network applies to data acquired with `scheme`.

        Rotation-invariant networks: the scheme has the network's shells, each with a number of
        directions within the trained range and a well-spread set (:mod:`.features`).
        Raw-signal networks: the same volumes in the same order, b-values within tolerance and
        b-vectors equal up to sign and one global rotation of the whole table.

        Parameters
        ----------
        scheme : Scheme
            Scheme of the data to estimate.

        Raises
        ------
        SchemeMismatchError
            Naming what differs and how to get a network that applies.
        """
        self._design(scheme)

    def _design(self, scheme: Scheme) -> ShellDesign | None:
        """Check `scheme`; return the feature design of an invariant network (None: raw)."""
        meta = self.metadata
        try:
            if meta.features is not None:
                return design(scheme, meta.features)
            ok, reason = meta.scheme.matches(scheme, rotation=True)
            if not ok:
                raise FeatureError(reason)
            return None
        except FeatureError as err:
            command = shlex.join(
                ["noddi-bids-train", "--bval", "DWI.bval", "--bvec", "DWI.bvec"]
                + ["--labels", meta.labels, "--out", f"nn-{meta.labels}.onnx"]
            )
            raise SchemeMismatchError(
                f"Network {self.path} ({meta.describe()}) does not apply to the data's scheme "
                f"({scheme.summary()}): {err}. Use --model auto (a shipped or cached network "
                f"for the data's shells, trained once if there is none) or train one with "
                f"`{command}` (the data's bval/bvec files)."
            ) from err

    def predict(
        self, signals: np.ndarray, scheme: Scheme | None = None, chunk_size: int = CHUNK_SIZE
    ) -> np.ndarray:
        """Estimate ODI, NDI and FWF.

        Parameters
        ----------
        signals : ndarray, shape (N, M)
            Signals normalised by their mean b = 0, volumes in the order of `scheme`.
        scheme : Scheme, optional
            The data's scheme; required by rotation-invariant networks (raw-signal networks
            take the volumes in the order they were trained on).
        chunk_size : int
            Voxels per ONNX Runtime call.

        Returns
        -------
        ndarray of float64, shape (N, 3)
            Columns in ``metadata.parameters`` order (ODI, NDI, FWF), each in [0, 1].

        Raises
        ------
        SchemeMismatchError
            If the network does not apply to `scheme`.
        """
        return self._run(signals, scheme, chunk_size)[:, : len(self.metadata.parameters)]

    def predict_with_spread(
        self, signals: np.ndarray, scheme: Scheme | None = None, chunk_size: int = CHUNK_SIZE
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Estimates and, for networks with a spread head, the SD of their error.

        Parameters
        ----------
        signals, scheme, chunk_size
            As in :meth:`predict`.

        Returns
        -------
        estimates : ndarray of float64, shape (N, 3)
            ODI, NDI, FWF.
        spread : ndarray of float64, shape (N, 3), or None
            The network's standard deviation of each estimate's error against the truth (None
            when the network has no spread head).
        """
        output = self._run(signals, scheme, chunk_size)
        n = len(self.metadata.parameters)
        return output[:, :n], (output[:, n:] if self.metadata.spread else None)

    def _run(self, signals: np.ndarray, scheme: Scheme | None, chunk_size: int) -> np.ndarray:
        signals = np.asarray(signals)
        features = self.metadata.features
        if features is not None and scheme is None:
            raise ValueError(f"{self.path.name} takes rotation-invariant inputs: pass the scheme")
        layout = self._design(scheme) if scheme is not None else None
        n_meas = self.metadata.n_inputs if layout is None else scheme.n_measurements
        if signals.ndim != 2 or signals.shape[1] != n_meas:
            raise ValueError(
                f"signals must have shape (voxels, {n_meas}) for {self.path.name}, "
                f"got {signals.shape}"
            )
        out = np.empty((signals.shape[0], self.metadata.n_outputs), dtype=np.float64)
        block = chunk_size if layout is None else max(chunk_size, FEATURE_BLOCK)
        for first in range(0, signals.shape[0], block):
            rows = signals[first : first + block]
            inputs = rows if layout is None else layout.features(rows)
            inputs = np.ascontiguousarray(inputs, dtype=np.float32)
            for start in range(0, inputs.shape[0], chunk_size):
                chunk = {self._input: inputs[start : start + chunk_size]}
                out[first + start : first + start + chunk_size] = self._session.run(None, chunk)[0]
        return out
