"""Vectorised conversion between float arrays and Kaldi's text number format.

Kaldi writes a float with ``os << value`` at stream precision 7, which is printf
``%.7g``: 7 significant digits, round-half-even on the exact binary value,
trailing zeros stripped, exponent form (``1e-05``, ``1.5e+07``) when the decimal
exponent X is outside ``-4 <= X < 7``.  Formatting millions of floats one by one
in Python costs seconds, so :func:`format_g7` builds the characters with numpy
and only falls back to ``'%.7g' % x`` for values whose 8th digit sits within
1e-6 of a rounding tie (or that are inf/nan/extreme), where float64 arithmetic
could round differently from printf.
"""
from __future__ import annotations

import numpy as np

_POW10 = 10.0 ** np.arange(0, 23)
_DIGIT_DIV = (10 ** np.arange(6, -1, -1)).astype(np.int32)  # 1e6 .. 1
_ZERO, _DOT, _MINUS, _PLUS, _E, _SP, _NL = (ord(c) for c in "0.-+e \n")


def _significand(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For finite a > 0 return (r, e, exact): a ~= r * 10**(e-6), 1e6 <= r < 1e7.

    ``exact`` is False where float64 rounding may disagree with printf.
    """
    e = np.floor(np.log10(a)).astype(np.int32)
    ok = (e >= -16) & (e <= 28)
    e = np.clip(e, -16, 28)
    m = _scale(a, e)
    lo = m < 1e6
    e = e - lo
    hi = m >= 1e7
    e = e + hi
    ok &= (e >= -16) & (e <= 28)
    e = np.clip(e, -16, 28)
    m = _scale(a, e)
    frac = m - np.floor(m)
    exact = ok & (np.abs(frac - 0.5) > 1e-6)
    r = np.rint(np.where(ok, m, 1e6)).astype(np.int32)
    carry = r >= 10_000_000
    r = np.where(carry, r // 10, r)
    e = e + carry
    return r, e, exact


def _scale(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """a * 10**(6-e) with a single exactly-representable power of ten."""
    k = 6 - e
    pos = k >= 0
    return np.where(pos, a * _POW10[np.clip(k, 0, 22)], a / _POW10[np.clip(-k, 0, 22)])


_CHUNK = 16384  # small temporaries stay in cache; large ones cost page faults


def format_g7(values: np.ndarray, row_len: int = 0) -> bytes:
    """Format floats as Kaldi text: each value ``%.7g`` followed by one space.

    With ``row_len > 0`` the values are matrix rows of that length and each row
    starts with ``"\\n  "`` (Kaldi's text matrix layout).
    """
    flat = np.asarray(values).ravel()
    step = _CHUNK if row_len <= 0 else max(1, _CHUNK // row_len) * row_len
    return b"".join(_format_chunk(flat[i:i + step].astype(np.float64), row_len)
                    for i in range(0, flat.size, step))


def _format_chunk(v: np.ndarray, row_len: int) -> bytes:
    n = v.size
    neg = np.signbit(v)
    a = np.abs(v)
    finite = np.isfinite(a) & (a > 0)
    r = np.full(n, 1_000_000, dtype=np.int32)
    e = np.zeros(n, dtype=np.int32)
    exact = np.ones(n, dtype=bool)
    if finite.any():
        rf, ef, xf = _significand(a[finite])
        r[finite], e[finite], exact[finite] = rf, ef, xf
    zero = a == 0
    exact &= np.isfinite(a)
    digits = ((r[:, None] // _DIGIT_DIV[None, :]) % 10).astype(np.uint8) + _ZERO
    nz = digits != _ZERO
    last = 6 - np.argmax(nz[:, ::-1], axis=1)  # index of the last nonzero digit

    pre = 3 if row_len > 0 else 0
    width = pre + 16
    buf = np.zeros((n, width), dtype=np.uint8)
    if row_len > 0:
        first = (np.arange(n) % row_len) == 0
        buf[first, 0] = _NL
        buf[first, 1] = _SP
        buf[first, 2] = _SP
    buf[:, pre] = np.where(neg, _MINUS, 0)
    buf[:, width - 1] = _SP
    j = np.arange(7)[None, :]
    body = buf[:, pre + 1:width - 1]  # 14 free columns per value

    fixed_int = ~zero & (e >= 0) & (e <= 6)
    if fixed_int.any():
        rows = np.nonzero(fixed_int)[0]
        ee, ll = e[rows][:, None], last[rows][:, None]
        d = np.where(j <= np.maximum(ee, ll), digits[rows], 0)
        p = np.where((j == ee) & (ll > ee), _DOT, 0)
        block = np.empty((rows.size, 14), dtype=np.uint8)
        block[:, 0::2], block[:, 1::2] = d, p
        body[rows] = block
    fixed_frac = ~zero & (e < 0) & (e >= -4)
    if fixed_frac.any():
        rows = np.nonzero(fixed_frac)[0]
        ee, ll = e[rows][:, None], last[rows][:, None]
        block = np.zeros((rows.size, 14), dtype=np.uint8)
        block[:, 0], block[:, 1] = _ZERO, _DOT
        block[:, 2:5] = np.where(np.arange(3)[None, :] < -ee - 1, _ZERO, 0)
        block[:, 5:12] = np.where(j <= ll, digits[rows], 0)
        body[rows] = block
    expo = ~zero & ((e < -4) | (e > 6))
    if expo.any():
        rows = np.nonzero(expo)[0]
        ee, ll = e[rows], last[rows][:, None]
        ae = np.abs(ee)
        block = np.zeros((rows.size, 14), dtype=np.uint8)
        block[:, 0] = digits[rows, 0]
        block[:, 1] = np.where(ll[:, 0] > 0, _DOT, 0)
        block[:, 2:8] = np.where(j[:, 1:] <= ll, digits[rows, 1:], 0)
        block[:, 8] = _E
        block[:, 9] = np.where(ee < 0, _MINUS, _PLUS)
        block[:, 10] = np.where(ae >= 100, _ZERO + ae // 100, 0)
        block[:, 11] = _ZERO + (ae // 10) % 10
        block[:, 12] = _ZERO + ae % 10
        body[rows] = block
    body[zero, 0] = _ZERO
    for i in np.nonzero(~exact)[0]:
        s = ("%.7g" % v[i]).encode()
        body[i] = 0
        buf[i, pre] = 0
        body[i, :len(s)] = np.frombuffer(s, dtype=np.uint8)
    return buf[buf != 0].tobytes()


def format_g7_scalar(value: float) -> str:
    """One float as Kaldi text (``%.7g``)."""
    return "%.7g" % float(value)


def parse_floats(text: bytes, dtype=np.float32) -> np.ndarray | None:
    """Parse whitespace-separated decimal numbers; None if a token is not a number."""
    import warnings
    n_tokens = len(text.split())
    if n_tokens == 0:
        return np.zeros(0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = np.fromstring(text.decode("ascii"), dtype=np.float64, sep=" ")
        except (ValueError, UnicodeDecodeError):
            return None
    if out.size != n_tokens:
        return None
    return out.astype(dtype)
