"""Array-namespace shim so that one implementation of the model serves NumPy and PyTorch.

The forward model is written once against the small set of operations below. NumPy arrays get
NumPy/SciPy functions; torch tensors get torch functions (differentiable). torch is imported only
when a tensor is passed in, so the NumPy path never imports it.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
from scipy import special

_NUMPY = SimpleNamespace(
    name="numpy",
    exp=np.exp,
    sin=np.sin,
    cos=np.cos,
    sqrt=np.sqrt,
    abs=np.abs,
    arctan2=np.arctan2,
    tan=np.tan,
    i0e=special.i0e,
    where=np.where,
    minimum=np.minimum,
    maximum=np.maximum,
    sum=lambda x, axis: np.sum(x, axis=axis),
    concatenate=np.concatenate,
    asarray=lambda value, like: np.asarray(value, dtype=np.result_type(like, np.float64)),
)


def _torch_namespace() -> SimpleNamespace:
    import torch

    def asarray(value: Any, like: torch.Tensor) -> torch.Tensor:
        dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
        return torch.as_tensor(value, dtype=dtype, device=like.device)

    return SimpleNamespace(
        name="torch",
        exp=torch.exp,
        sin=torch.sin,
        cos=torch.cos,
        sqrt=torch.sqrt,
        abs=torch.abs,
        arctan2=torch.atan2,
        tan=torch.tan,
        i0e=torch.special.i0e,
        where=torch.where,
        minimum=lambda x, y: torch.clamp(x, max=y),
        maximum=lambda x, y: torch.clamp(x, min=y),
        sum=lambda x, axis: torch.sum(x, dim=axis),
        concatenate=lambda xs, axis: torch.cat(xs, dim=axis),
        asarray=asarray,
    )


def is_tensor(x: Any) -> bool:
    """Return True when ``x`` is a torch tensor (without importing torch if it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def namespace(x: Any) -> SimpleNamespace:
    """Return the operations matching the array type of ``x`` (NumPy or torch)."""
    return _torch_namespace() if is_tensor(x) else _NUMPY
