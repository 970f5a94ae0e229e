"""The error function and its complement on NumPy arrays, so that the CPU's GELU needs no SciPy.

The rational approximations of Cephes' ndtr.c (S. L. Moshier; the ones SciPy's erf compiles):
  |x| <= 1      erf(x)  = x T(x^2) / U(x^2)
  1 < x < 8     erfc(x) = exp(-x^2) P(x) / Q(x)
  x >= 8        erfc(x) = exp(-x^2) R(x) / S(x)
with erfc(x) = 1 - erf(x) within 1, erfc(-x) = 2 - erfc(x), and erf = 1 - erfc past 1. Each is
evaluated in float64 (relative error about 1e-16) and returned in the input's float dtype, so a
float32 result is float32 rounding of the function. erfc of a large argument is computed
directly, never as 1 - erf, so its tail keeps its relative accuracy (GELU of a negative input
is x erfc(-x / sqrt 2) / 2).
"""
import numpy as np

_T = (9.60497373987051638749E0, 9.00260197203842689217E1, 2.23200534594684319226E3,
      7.00332514112805075473E3, 5.55923013010394962768E4)
_U = (1.0, 3.35617141647503099647E1, 5.21357949780152679795E2, 4.59432382970980127987E3,
      2.26290000613890934246E4, 4.92673942608635921086E4)
_P = (2.46196981473530512524E-10, 5.64189564831068821977E-1, 7.46321056442269912687E0,
      4.86371970985681366614E1, 1.96520832956077098242E2, 5.26445194995477358631E2,
      9.34528527171957607540E2, 1.02755188689515710272E3, 5.57535335369399327526E2)
_Q = (1.0, 1.32281951154744992508E1, 8.67072140885989742329E1, 3.54937778887819891062E2,
      9.75708501743205489753E2, 1.82390916687909736289E3, 2.24633760818710981792E3,
      1.65666309194161350182E3, 5.57535340817727675546E2)
_R = (5.64189583547755073984E-1, 1.27536670759978104416E0, 5.01905042251180477414E0,
      6.16021097993053585195E0, 7.40974269950448939160E0, 2.97886665372100240670E0)
_S = (1.0, 2.26052863220117276590E0, 9.39603524938001434673E0, 1.20489539808096656605E1,
      1.70814450747565897222E1, 9.60896809063285878198E0, 3.36907645100081516050E0)
_UNDERFLOW = 27.0        # exp(-27^2) is 0 in float64: erfc is 0 past it (and R/S stays finite)


def _poly(x, coefficients):
    """Horner's rule, highest power first."""
    y = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        y = y * x + c
    return y


def _erf_within_one(v):
    z = v * v
    return v * _poly(z, _T) / _poly(z, _U)


def _erfc_past_one(a):
    """erfc(a) for a > 1 (float64 array)."""
    a = np.minimum(a, _UNDERFLOW)
    mid = a < 8.0
    ratio = np.empty_like(a)
    ratio[mid] = _poly(a[mid], _P) / _poly(a[mid], _Q)
    ratio[~mid] = _poly(a[~mid], _R) / _poly(a[~mid], _S)          # also NaN
    return np.exp(-a * a) * ratio


def _as_float64(x):
    x = np.asarray(x)
    return x.astype(np.float64), (x.dtype if x.dtype.kind == "f" else np.dtype(np.float64))


def erf(x):
    """erf of a float array (or scalar), in its dtype (float64 for integers)."""
    v, dtype = _as_float64(x)
    out = np.empty_like(v)
    small = np.abs(v) <= 1.0                         # NaN falls to the other branch
    out[small] = _erf_within_one(v[small])
    big = ~small
    out[big] = np.sign(v[big]) * (1.0 - _erfc_past_one(np.abs(v[big])))
    return out.astype(dtype, copy=False)


def erfc(x):
    """1 - erf(x), accurate in its tail, in x's dtype (float64 for integers)."""
    v, dtype = _as_float64(x)
    out = np.empty_like(v)
    small = np.abs(v) <= 1.0
    out[small] = 1.0 - _erf_within_one(v[small])
    big = ~small
    tail = _erfc_past_one(np.abs(v[big]))
    out[big] = np.where(v[big] > 0, tail, 2.0 - tail)
    return out.astype(dtype, copy=False)


GELU_BLOCK = 1 << 15      # values per float64 pass: the temporaries stay a few hundred KiB


def gelu(x):
    """GELU, x Phi(x) = x erfc(-x / sqrt 2) / 2, in x's float dtype. Computed in float64 a block
    at a time into the output, so a large activation costs its output and little more."""
    x = np.asarray(x)
    out = np.empty(x.shape, x.dtype if x.dtype.kind == "f" else np.float64)
    src, dst = x.reshape(-1), out.reshape(-1)
    for start in range(0, src.size, GELU_BLOCK):
        v = src[start:start + GELU_BLOCK].astype(np.float64)
        dst[start:start + GELU_BLOCK] = 0.5 * v * erfc(v * -np.sqrt(0.5))
    return out
