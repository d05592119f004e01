"""Correlation helpers that generated kernel code calls (ntkdsl.symbolic.Corr prints as
_corr; the in-place emitter, ntkdsl.inplace, scales matrices by _inv_sqrt).

Part of ntkdsl's runtime: NumPy only, nothing from ntkdsl; the library calls these very
functions and standalone modules embed this text verbatim.
"""
import numpy


def _corr(k, q1, q2):
    """Correlation k / sqrt(q1 q2), clipped to [-1, 1]; 0 where a variance is 0."""
    norm = numpy.sqrt(q1 * q2)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        c = numpy.where(norm > 0, k / numpy.where(norm > 0, norm, 1.0), 0.0)
    return numpy.clip(c, -1.0, 1.0)


def _inv_sqrt(q):
    """1 / sqrt(q) for a vector of variances. A zero variance gets a huge finite factor
    instead of inf: its covariances are exactly 0 (Cauchy-Schwarz), so its correlations
    come out 0, as _corr gives them. The floor is the smallest normal number of q's own
    precision (1e-300 would round to 0 in float32, and 0 * inf is NaN)."""
    floor = numpy.finfo(numpy.result_type(q, 1.0)).tiny
    return numpy.reciprocal(numpy.sqrt(numpy.maximum(q, floor)))
