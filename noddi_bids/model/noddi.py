"""The NODDI forward model (Zhang et al., NeuroImage 2012), exact and vectorised.

Normalised signal for gradient direction ``g`` and b-value ``b``, with fibre orientation ``mu``::

    S/S0 = (1 - FWF) * [NDI * S_ic + (1 - NDI) * S_ec] + FWF * exp(-b * d_iso)

Units: b in s/mm^2, diffusivities in mm^2/s, so ``b * d`` is dimensionless.

Why hand-written: DIPY and AMICO do not expose an exact, differentiable NODDI signal. The NODDI
MATLAB Toolbox evaluates the Watson-dispersed stick with an order-12 spherical-harmonic series
whose error reaches 3e-4 at ODI 0.01. Here it is computed exactly instead: the product of the
Watson density ``exp(kappa (mu.n)^2)`` and the stick attenuation ``exp(-b d (g.n)^2)`` is
``exp(n^T A n)`` with ``A = kappa mu mu^T - b d g g^T``, i.e. a Bingham density. Its integral over
the sphere only depends on the two non-zero eigenvalues ``l1 >= 0 >= l2`` of ``A``::

    integral exp(n^T A n) dn = 4 pi * int_0^1 exp(l1 t^2) exp(l2 (1-t^2)/2) I0(l2 (1-t^2)/2) dt

(the azimuthal integral around the ``l1`` axis is a Bessel function). The remaining smooth 1-D
integral is evaluated by Gauss-Legendre quadrature in the polar angle, on an interval scaled to the
width of the peak, and agrees with brute-force 2-D integration to ~1e-15 for kappa in [0, 64].
The same quadrature gives the Watson normaliser and the Watson mean of ``(mu.n)^2`` used by the
hindered compartment, so no Dawson function (absent from torch) is needed.

Every function accepts NumPy arrays or torch tensors (see :mod:`noddi_bids.model.backend`); the
torch path is differentiable, so the PyTorch twin is this same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from noddi_bids.model.backend import namespace

#: Intra-neurite parallel diffusivity, mm^2/s (NODDI toolbox default, in-vivo white matter).
D_PAR = 1.7e-3
#: Intra-neurite parallel diffusivity of grey-matter NODDI, mm^2/s (QSIRecon's gmNODDI;
#: Guerrero et al. 2019, Fukutomi et al. 2018).
GM_D_PAR = 1.1e-3
#: Free-water diffusivity, mm^2/s (NODDI toolbox default, water at body temperature).
D_ISO = 3.0e-3
#: Largest Watson concentration of the model's parameter range (ODI ~ 0.00995).
KAPPA_MAX = 64.0
#: Gauss-Legendre nodes of the polar-angle quadrature (converged to machine precision).
N_QUADRATURE = 48
#: Peak half-width multiplier: the integrand is below exp(-PEAK_WIDTH^2) beyond the interval.
_PEAK_WIDTH = 8.0

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(N_QUADRATURE)
_GL_NODES = (_GL_NODES + 1.0) / 2.0  # on [0, 1]
_GL_WEIGHTS = _GL_WEIGHTS / 2.0
_TINY = 1e-300
#: Voxels evaluated together (bounds the (voxels, measurements, nodes) temporaries to ~64 MB).
_CHUNK = 2048


def kappa_from_odi(odi: Any) -> Any:
    """Watson concentration from the orientation dispersion index, ``kappa = 1 / tan(pi/2 ODI)``.

    Parameters
    ----------
    odi : array_like
        Orientation dispersion index in (0, 1].

    Returns
    -------
    array_like
        Concentration kappa >= 0 (0 at ODI = 1).
    """
    xp = namespace(odi)
    return 1.0 / xp.tan(np.pi / 2.0 * odi)


def odi_from_kappa(kappa: Any) -> Any:
    """Orientation dispersion index from the Watson concentration, ``(2/pi) arctan(1/kappa)``."""
    xp = namespace(kappa)
    return 2.0 / np.pi * xp.arctan2(xp.asarray(1.0, kappa), kappa)


#: Smallest ODI of the model's parameter range (kappa = KAPPA_MAX).
ODI_MIN = float(odi_from_kappa(np.float64(KAPPA_MAX)))


def _polar_quadrature(xp: Any, concentration: Any) -> tuple[Any, Any]:
    """Nodes ``cos^2(theta)`` and weights for int_0^{pi/2} f(cos theta) sin(theta) dtheta.

    The interval is shrunk to ``PEAK_WIDTH / sqrt(concentration)`` for concentrated integrands
    so that the Gaussian-like peak at theta = 0 is always resolved. A quadrature axis is appended.
    """
    limit = xp.minimum(_PEAK_WIDTH / xp.sqrt(xp.maximum(concentration, _TINY)), np.pi / 2.0)
    theta = limit[..., None] * xp.asarray(_GL_NODES, concentration)
    weights = limit[..., None] * xp.asarray(_GL_WEIGHTS, concentration) * xp.sin(theta)
    cos2 = xp.cos(theta) ** 2
    return cos2, weights


def _watson_integrals(kappa: Any) -> tuple[Any, Any]:
    """Scaled Watson normaliser ``int_0^1 exp(kappa (t^2 - 1)) dt`` and mean of ``t^2``."""
    xp = namespace(kappa)
    cos2, weights = _polar_quadrature(xp, kappa)
    density = weights * xp.exp(kappa[..., None] * (cos2 - 1.0))
    norm = xp.sum(density, axis=-1)
    return norm, xp.sum(density * cos2, axis=-1) / norm


def watson_mean_cos2(kappa: Any) -> Any:
    """Mean of ``(mu.n)^2`` under a Watson distribution of concentration ``kappa``.

    Equals ``1 / (2 sqrt(kappa) F(sqrt(kappa))) - 1 / (2 kappa)`` with F the Dawson function;
    1/3 at kappa = 0 and tends to 1 as kappa grows.
    """
    return _watson_integrals(kappa)[1]


def _bingham_eigenvalues(xp: Any, kappa: Any, beta: Any, cos_angle: Any) -> tuple[Any, Any]:
    """Non-zero eigenvalues ``l1 >= 0 >= l2`` of ``kappa mu mu^T - beta g g^T``.

    Uses the product of the roots (``-kappa beta sin^2``) for the smaller one, which avoids
    cancellation.
    """
    diff = kappa - beta
    product = kappa * beta * (1.0 - cos_angle**2)
    root = xp.sqrt(diff**2 + 4.0 * product + _TINY)
    large = (xp.abs(diff) + root) / 2.0
    small = product / xp.maximum(large, _TINY)
    positive = diff >= 0
    return xp.where(positive, large, small), -xp.where(positive, small, large)


def watson_stick_signal(kappa: Any, beta: Any, cos_angle: Any) -> Any:
    """Signal of sticks dispersed by a Watson distribution (intra-neurite compartment).

    Parameters
    ----------
    kappa : array_like
        Watson concentration (>= 0).
    beta : array_like
        ``b * d_par`` (dimensionless, >= 0).
    cos_angle : array_like
        Cosine of the angle between gradient direction and mean fibre orientation.

    Returns
    -------
    array_like
        Attenuation in [0, 1]; arguments broadcast against each other.
    """
    xp = namespace(kappa)
    l1, l2 = _bingham_eigenvalues(xp, kappa, beta, cos_angle)
    cos2, weights = _polar_quadrature(xp, l1)
    integrand = xp.exp(l1[..., None] * (cos2 - 1.0)) * xp.i0e(-l2[..., None] * (1.0 - cos2) / 2.0)
    numerator = xp.sum(weights * integrand, axis=-1)
    return xp.exp(l1 - kappa) * numerator / _watson_integrals(kappa)[0]


def hindered_signal(kappa: Any, ndi: Any, b: Any, cos_angle: Any, d_par: float = D_PAR) -> Any:
    """Signal of the Watson-averaged, tortuosity-constrained hindered compartment.

    The cylindrical tensor (``d_par``, ``d_perp = d_par (1 - NDI)``) averaged over the Watson
    distribution stays cylindrical about ``mu``: with ``E = <(mu.n)^2>``,
    ``d_par_w = d_perp + (d_par - d_perp) E`` and ``d_perp_w = d_perp + (d_par - d_perp)(1 - E)/2``.

    Parameters
    ----------
    kappa, ndi : array_like
        Watson concentration and neurite density index.
    b : array_like
        b-value, s/mm^2.
    cos_angle : array_like
        Cosine between gradient direction and fibre orientation.
    d_par : float
        Intra-neurite parallel diffusivity, mm^2/s.

    Returns
    -------
    array_like
        Attenuation in [0, 1].
    """
    xp = namespace(kappa)
    mean_cos2 = watson_mean_cos2(kappa)
    d_perp = d_par * (1.0 - ndi)
    anisotropy = (d_par - d_perp) * (3.0 * mean_cos2 - 1.0) / 2.0
    d_perp_w = d_perp + (d_par - d_perp) * (1.0 - mean_cos2) / 2.0
    return xp.exp(-b * (d_perp_w + anisotropy * cos_angle**2))


def compartment_mix(ndi: Any, fwf: Any, s_ic: Any, s_ec: Any, s_iso: Any) -> Any:
    """Combine compartment signals: ``(1 - fwf) (ndi s_ic + (1 - ndi) s_ec) + fwf s_iso``."""
    return (1.0 - fwf) * (ndi * s_ic + (1.0 - ndi) * s_ec) + fwf * s_iso


def noddi_signal(
    odi: Any,
    ndi: Any,
    fwf: Any,
    direction: Any,
    bvals: Any,
    bvecs: Any,
    d_par: float = D_PAR,
    d_iso: float = D_ISO,
) -> Any:
    """Normalised NODDI signal ``S/S0`` for a batch of voxels.

    Parameters
    ----------
    odi, ndi, fwf : array_like, shape (N,) or scalar
        Orientation dispersion index (0, 1], neurite density index and free-water fraction [0, 1].
    direction : array_like, shape (N, 3) or (3,)
        Unit mean fibre orientations.
    bvals : array_like, shape (M,)
        b-values, s/mm^2.
    bvecs : array_like, shape (M, 3)
        Unit gradient directions (any vector for b = 0).
    d_par, d_iso : float
        Intra-neurite parallel and free-water diffusivities, mm^2/s.

    Returns
    -------
    array_like, shape (N, M)
        Signal normalised by the b = 0 signal; same array type (NumPy or torch) as ``odi``.
    """
    xp = namespace(odi)
    odi = xp.asarray(odi, odi).reshape(-1, 1)
    ndi = xp.asarray(ndi, odi).reshape(-1, 1)
    fwf = xp.asarray(fwf, odi).reshape(-1, 1)
    direction = xp.asarray(direction, odi).reshape(-1, 3)
    bvals = xp.asarray(bvals, odi).reshape(1, -1)
    bvecs = xp.asarray(bvecs, odi).reshape(-1, 3)
    odi, ndi, fwf, direction = _broadcast_voxels(xp, odi, ndi, fwf, direction)
    s_iso = xp.exp(-bvals * d_iso)
    chunks = []
    for start in range(0, odi.shape[0], _CHUNK):
        part = slice(start, start + _CHUNK)
        cos_angle = direction[part] @ bvecs.T
        kappa = kappa_from_odi(odi[part])
        s_ic = watson_stick_signal(kappa, bvals * d_par, cos_angle)
        s_ec = hindered_signal(kappa, ndi[part], bvals, cos_angle, d_par)
        chunks.append(compartment_mix(ndi[part], fwf[part], s_ic, s_ec, s_iso))
    return xp.concatenate(chunks, axis=0)


def _broadcast_voxels(xp: Any, odi: Any, ndi: Any, fwf: Any, direction: Any) -> tuple:
    """Broadcast per-voxel parameters to a common voxel count N (columns of shape (N, 1))."""
    n = max(odi.shape[0], ndi.shape[0], fwf.shape[0], direction.shape[0])
    ones = xp.asarray(np.ones((n, 1)), odi)
    return odi * ones, ndi * ones, fwf * ones, direction * ones


def tissue_fraction_modulated(value: Any, fwf: Any) -> Any:
    """Weight a tissue parameter by the tissue fraction: ``value * (1 - fwf)``.

    QSIRecon's modulated NODDI maps (Parker et al. 2021): NDI x (1 - FWF) is the intra-neurite
    volume fraction of the whole voxel, so that voxels with free water count less.

    Examples
    --------
    >>> float(tissue_fraction_modulated(0.5, 0.25))
    0.375
    """
    return value * (1.0 - fwf)
