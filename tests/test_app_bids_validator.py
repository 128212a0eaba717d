"""The derivatives pass the official BIDS schema validator (``bids-validator-deno``).

The validator is in the ``test`` extra; without it these tests are skipped with the reason.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import nibabel as nib
import numpy as np
import pytest
from conftest import make_bids_dataset, make_qsiprep_dataset

from noddi_bids.cli.run import main

VALIDATOR = shutil.which("bids-validator-deno")
needs_validator = pytest.mark.skipif(
    VALIDATOR is None,
    reason="bids-validator-deno is not installed (pip install 'noddi-bids[test]')",
)


def run(*args: object) -> int:
    return main([str(a) for a in args])


def validator_errors(dataset: Path) -> list[str]:
    """Errors of the schema validator on ``dataset``, as ``CODE location (detail)``."""
    result = subprocess.run(
        [VALIDATOR, str(dataset), "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    issues = json.loads(result.stdout)["issues"]["issues"]
    errors = [
        f"{issue['code']} {issue.get('location')} ({issue.get('subCode')})"
        for issue in issues
        if issue["severity"] == "error"
    ]
    assert errors or result.returncode == 0, result.stderr
    return errors


def resolve_uri(derivatives: Path, uri: str) -> Path:
    """File a ``bids:<dataset>:<path>`` URI names, through ``DatasetLinks``."""
    description = json.loads((derivatives / "dataset_description.json").read_text())
    scheme, name, path = uri.split(":", 2)
    assert scheme == "bids"
    link = description["DatasetLinks"][name]
    if link.startswith("file:"):
        return Path(url2pathname(urlparse(link).path)) / path
    return (derivatives / link / path).resolve()


@needs_validator
def test_derivatives_pass_the_validator(tmp_path, model_cache):
    """NN, --mle, --dicom and the group level: zero validator errors, every BIDS URI resolves."""
    phantom = make_bids_dataset(tmp_path / "bids", synthseg="labels")
    out, work = phantom.root / "derivatives" / "noddi", tmp_path / "work"
    assert run(phantom.root, out, "participant", "-w", work, "--nprocs", "1", "--mle",
               "--dicom", "--synthseg-dir", phantom.synthseg_dir) == 0  # fmt: skip
    assert run(phantom.root, out, "group") == 0
    assert (out / "sub-01" / "dicom").is_dir() and (out / "figures").is_dir()
    assert validator_errors(out) == []
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetLinks"] == {"raw": "../.."}
    sidecars = sorted((out / "sub-01" / "dwi").glob("*.json"))
    uris = {uri for path in sidecars for uri in json.loads(path.read_text()).get("Sources", [])}
    assert "bids:raw:sub-01/dwi/sub-01_dwi.nii.gz" in uris
    for uri in uris:
        assert resolve_uri(out, uri).is_file(), uri
    for tissue in ("WM", "GM", "CSF"):
        path = out / "sub-01" / "dwi" / f"sub-01_label-{tissue}_mask.json"
        sidecar = json.loads(path.read_text())
        assert sidecar["Type"] == "ROI" and f"({tissue})" in sidecar["Description"]


@needs_validator
def test_qsiprep_input_derivatives_pass_the_validator(tmp_path, model_cache):
    """A preprocessed input: space- names and bids:preprocessed: URIs are valid too."""
    phantom = make_qsiprep_dataset(tmp_path / "qsiprep", brain_mask=True)
    out = tmp_path / "out"
    assert run(phantom.root, out, "participant", "-w", tmp_path / "work", "--nprocs", "1") == 0
    assert validator_errors(out) == []
    mask = out / "sub-01" / "dwi" / "sub-01_space-T1w_desc-brain_mask.json"
    sidecar = json.loads(mask.read_text())
    for uri in sidecar["Sources"]:
        assert resolve_uri(out, uri).is_file(), uri


@needs_validator
def test_validator_catches_invalid_sidecars(tmp_path):
    """The check above can fail: a tissue mask typed as its tissue is a schema error."""
    out = tmp_path / "out"
    (out / "sub-01" / "dwi").mkdir(parents=True)
    (out / "dataset_description.json").write_text(
        json.dumps({"Name": "x", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "noddi-bids"}]})  # fmt: skip
    )
    stem = out / "sub-01" / "dwi" / "sub-01_label-WM_mask"
    nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.uint8), np.eye(4)), f"{stem}.nii.gz")
    Path(f"{stem}.json").write_text(json.dumps({"Type": "WM"}))
    assert any(e.startswith("JSON_SCHEMA_VALIDATION_ERROR") for e in validator_errors(out))
