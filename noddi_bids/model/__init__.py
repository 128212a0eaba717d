"""The NODDI model: acquisition schemes, the exact forward model, Rician noise, normalisation."""

from noddi_bids.model.noddi import D_ISO, D_PAR, noddi_signal
from noddi_bids.model.noise import add_rician_noise
from noddi_bids.model.scheme import Scheme, SchemeError, read_scheme, reference_scheme

__all__ = [
    "D_ISO",
    "D_PAR",
    "Scheme",
    "SchemeError",
    "add_rician_noise",
    "noddi_signal",
    "read_scheme",
    "reference_scheme",
]
