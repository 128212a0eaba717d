"""Export a trained NODDI network to ONNX with its metadata (atomic write)."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import onnx
import torch

from noddi_bids import __version__
from noddi_bids.nn.metadata import METADATA_KEY, ModelMetadata

#: Input and output tensor names of the exported graph.
INPUT_NAME = "signals"
OUTPUT_NAME = "parameters"
#: ONNX opset of the export.
OPSET = 17


def export_onnx(network: torch.nn.Module, path: str | Path, metadata: ModelMetadata) -> Path:
    """Write `network` as ONNX with a dynamic batch axis and `metadata` in ``metadata_props``.

    The file is written to a temporary name in the target folder and renamed, so readers (and
    concurrent writers of the same model) never see a partial file.

    Parameters
    ----------
    network : torch.nn.Module
        Trained network taking (batch, M) float32 signals to (batch, 3) parameters.
    path : str or Path
        Output ``.onnx`` file; parent folders are created.
    metadata : ModelMetadata
        Scheme, diffusivities, labels, SNR and training record.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    network = network.to("cpu").eval()
    example = torch.zeros(1, metadata.scheme.n_measurements, dtype=torch.float32)
    buffer = io.BytesIO()
    torch.onnx.export(
        network,
        (example,),
        buffer,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "voxels"}, OUTPUT_NAME: {0: "voxels"}},
        opset_version=OPSET,
        dynamo=False,
    )
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name = "noddi-bids"
    model.producer_version = __version__
    model.doc_string = (
        f"NODDI network ({metadata.labels} labels) for {metadata.scheme.summary()}; "
        "input: signals normalised by the mean b = 0, output: ODI, NDI, FWF."
    )
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = metadata.to_json()
    onnx.checker.check_model(model)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(model.SerializeToString())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
