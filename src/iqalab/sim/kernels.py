"""Compiled loops of the simulator's renderer (issue #30: >= 20 renders/s of 512 x 512 on one core).

Each kernel fuses a chain of float32 numpy operations of :mod:`iqalab.sim.camera` into one pass over the image,
doing **the same float32 operations in the same order** for every value: the results are bit for bit those of
the numpy formulation they replace (``tests/test_sim_kernels.py`` keeps that formulation and checks equality),
so datasets built with them are byte-identical. Two rules keep that true:

* no ``fastmath`` (it would let LLVM fuse a multiply and an add, or reorder a sum);
* every scalar is passed in as the float32 (or float64) value numpy would have used: a Python float meeting a
  float32 array is rounded to float32 first (NEP 50), a float64 numpy scalar makes numpy compute in float64 and
  round the result (``x *= np.float64(g)`` on a float32 array).

Compiled once per machine: ``cache=True`` keeps the machine code next to this file (``__pycache__``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.np.random import _constants as ziggurat  # numba's copy of numpy's ziggurat tables


@njit(cache=True, nogil=True)
def _reflect(j: int, n: int) -> int:
    """scipy.ndimage's ``reflect`` border (``d c b a | a b c d``) for an index at most ``n - 1`` outside."""
    if j < 0:
        return -j - 1
    if j >= n:
        return 2 * n - j - 1
    return j


@njit(cache=True, nogil=True, inline="always")
def _pad_reflect(p: np.ndarray, r: int, m: int) -> None:
    """Fill the ``r`` border values on each side of the row ``p[r:r + m]`` (length ``m + 2r``) with its reflection
    (scipy's ``reflect``: ``d c b a | a b c d``)."""
    for j in range(r):
        p[j] = p[2 * r - 1 - j]
        p[r + m + j] = p[r + m - 1 - j]


@njit(cache=True, nogil=True, inline="always")
def _row_sums(p: np.ndarray, w: np.ndarray, o: np.ndarray) -> None:
    """The tap sums of one reflect-padded row ``p`` (see :func:`_pad_reflect`) into ``o``: ``x[j] w[r]``, then for
    ``i = 0 .. r - 1`` ``+ (x[j - r + i] + x[j + r - i]) w[i]``; taps outermost, so the inner loop runs along
    contiguous slices (vectorised)."""
    r = w.shape[0] // 2
    m = o.shape[0]
    wr = w[r]
    for j in range(m):
        o[j] = p[r + j] * wr
    for i in range(r):
        wi = w[i]
        left = p[i:i + m]
        right = p[2 * r - i:2 * r - i + m]
        for j in range(m):
            o[j] += (left[j] + right[j]) * wi


@njit(cache=True, nogil=True, inline="always")
def _column_sums(plane: np.ndarray, b: int, w: np.ndarray, o: np.ndarray) -> None:
    """The tap sums of row ``b`` of the (N, M) ``plane`` along its columns into ``o``, the same sums as
    :func:`_row_sums` with the rows combined whole (contiguous inner loop) and reflected at the plane's edges."""
    n = plane.shape[0]
    r = w.shape[0] // 2
    wr = w[r]
    x = plane[b]
    for j in range(o.shape[0]):
        o[j] = x[j] * wr
    for i in range(r):
        top = plane[_reflect(b - r + i, n)]
        bottom = plane[_reflect(b + r - i, n)]
        wi = w[i]
        for j in range(o.shape[0]):
            o[j] += (top[j] + bottom[j]) * wi


@njit(cache=True, nogil=True)
def correlate_rows(img: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """Correlate each row (last axis) of the float32 ``(L, N, M)`` ``img`` with the symmetric float32 kernel
    ``w`` (odd length ``2r + 1``, ``r < M``), reflect borders, into ``out``.

    Per output, as :func:`iqalab.sim.camera._correlate`'s tap sums: ``x[j] w[r]``, then for ``i = 0 .. r - 1``
    ``+ (x[j - r + i] + x[j + r - i]) w[i]``, each operation rounded to float32.
    """
    L, N, M = img.shape
    r = w.shape[0] // 2
    p = np.empty(M + 2 * r, dtype=np.float32)  # one row with its reflected borders
    for a in range(L):
        for b in range(N):
            p[r:r + M] = img[a, b]
            _pad_reflect(p, r, M)
            _row_sums(p, w, out[a, b])


@njit(cache=True, nogil=True)
def correlate_columns(img: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """:func:`correlate_rows` along the middle axis of ``(L, N, M)`` (``r < N``); rows are combined whole, so
    the inner loop runs along contiguous memory."""
    L, N, _ = img.shape
    for a in range(L):
        for b in range(N):
            _column_sums(img[a], b, w, out[a, b])


@njit(cache=True, nogil=True)
def smooth_planes(img: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """:func:`correlate_columns` then :func:`correlate_rows` of ``(L, N, M)`` ``img`` with the symmetric float32
    kernel ``w`` (``r < N``, ``r < M``) into ``out``, output row by output row: each row's column sums go to a
    one-row buffer (in cache) and are correlated along the row from there. The same float32 operations in the
    same order as the two passes, without writing and reading the intermediate image."""
    L, N, M = img.shape
    r = w.shape[0] // 2
    p = np.empty(M + 2 * r, dtype=np.float32)  # the row of column sums with its reflected borders
    for a in range(L):
        for b in range(N):
            _column_sums(img[a], b, w, p[r:r + M])
            _pad_reflect(p, r, M)
            _row_sums(p, w, out[a, b])


@njit(cache=True, nogil=True, inline="always")
def _encode_value(v: np.float32, pairs: np.ndarray, n: np.float32) -> np.float32:
    """One value of the table encoding (``v`` in [0, 1]): ``t = v n``, ``cell = floor(t)``,
    ``slope[cell] (t - cell) + value[cell]``; NaN where the table's slope is NaN."""
    t = v * n
    # t >= 0: truncation is the floor (and i <= n, inside the table); an unsigned index spares numba's
    # negative-index wrap-around on each of the two loads (about 40 % of the gather's time)
    i = np.uint32(t)
    t = t - np.float32(i)
    return pairs[i, 1] * t + pairs[i, 0]


@njit(cache=True, nogil=True)
def encode_table(rgb: np.ndarray, pairs: np.ndarray, out: np.ndarray) -> int:
    """:func:`iqalab.sim.camera._encode`'s clip and table interpolation over flat float32 ``rgb`` (clipped to
    [0, 1] in place) into ``out``, with ``pairs`` the (entries, 2) float32 (value, slope) table (see
    :func:`_encode_value`; the values being clipped first, every cell lies inside the table, which
    ``take(mode="clip")`` ensured before). A NaN slope leaves NaN for the caller to compute exactly; returns how
    many values did. The renderer uses :func:`recombine_encode`; this and :func:`recombine` are its unfused
    reference in the tests."""
    n = np.float32(pairs.shape[0] - 2)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for k in range(rgb.shape[0]):
        v = rgb[k]
        v = v if v >= zero else zero
        rgb[k] = v if v <= one else one
    nan_cells = 0
    for k in range(rgb.shape[0]):  # the gather in its own loop: the clipping above vectorises
        e = _encode_value(rgb[k], pairs, n)
        nan_cells += e != e
        out[k] = e
    return nan_cells


@njit(cache=True, nogil=True, inline="always")
def _expose_row(colour: np.ndarray, z: np.ndarray, y: int, exposure: np.float32, full_well: np.float32,
                gain: np.float32, gain2: np.float32, read2: np.float32, adc2: np.float32, saturation: np.float32,
                raw: np.ndarray, hit: np.ndarray) -> int:
    """Row ``y`` of :func:`expose` with the row's draws ``z`` (W, 3); ``hit`` is a (W,) uint8 work row. Plane by
    plane along the row (contiguous: vectorised); returns the row's pixels with a clipped channel."""
    zero = np.float32(0.0)
    w = colour.shape[2]
    for x in range(w):
        hit[x] = 0
    for c in range(3):
        light, clean_row, noisy_row = colour[c, y], raw[0, c, y], raw[1, c, y]
        for x in range(w):
            e = light[x] * exposure
            sd = e if e >= zero else zero
            sd = sd * gain2
            sd = sd + read2
            sd = sd + adc2
            sd = np.sqrt(sd)
            clean = e if e <= full_well else full_well
            clean = clean * gain
            clean = clean if clean <= saturation else saturation
            clean_row[x] = clean
            hit[x] |= clean >= saturation
            noisy = z[x, c] * sd
            noisy = noisy / gain
            noisy = noisy + e
            noisy = noisy if noisy <= full_well else full_well
            noisy = noisy * gain
            noisy = noisy if noisy >= zero else zero
            noisy_row[x] = noisy if noisy <= saturation else saturation
    clipped = 0
    for x in range(w):
        clipped += hit[x]
    return clipped


@njit(cache=True, nogil=True)
def expose(colour: np.ndarray, drawn: np.ndarray, exposure: np.float32, full_well: np.float32, gain: np.float32,
           gain2: np.float32, read2: np.float32, adc2: np.float32, saturation: np.float32,
           raw: np.ndarray) -> int:
    """The sensor of :func:`iqalab.sim.camera.capture` in one pass: the clean and the noisy raw planes into
    ``raw`` (2, 3, H, W) from the light ``colour`` (3, H, W) and the standard normal draws ``drawn`` (H, W, 3,
    pixel-interleaved); returns how many pixels have a channel at the saturation level in the clean raw.

    Per value: ``e = colour exposure``; ``sd = sqrt(max(e, 0) gain2 + read2 + adc2)``; clean
    ``min(min(e, full_well) gain, saturation)``; noisy ``clip(min((z sd / gain) + e, full_well) gain, 0,
    saturation)``; the scalars are those numpy used (float32).
    """
    hit = np.empty(colour.shape[2], dtype=np.uint8)
    clipped = 0
    for y in range(colour.shape[1]):
        clipped += _expose_row(colour, drawn[y], y, exposure, full_well, gain, gain2, read2, adc2, saturation,
                               raw, hit)
    return clipped


@njit(cache=True, nogil=True)
def _times(x: np.float32, factor: float, wide: bool) -> np.float32:
    """``x`` times a scalar ``factor`` as numpy does it for a float32 array: in float32 for a Python float
    (rounded to float32 first), in float64 and then rounded for a float64 numpy scalar (``wide``)."""
    if wide:
        return np.float32(np.float64(x) * factor)
    return x * np.float32(factor)


@njit(cache=True, nogil=True, inline="always")
def _luma(a: float, b: float, c: float, w0: float, w1: float, w2: float) -> float:
    """The luminance ``((a w0) + (b w1)) + (c w2)`` in that order (as ``camera._luma``): every kernel that
    computes a luma calls this, so their rounding cannot drift apart."""
    return (a * w0 + b * w1) + c * w2


@njit(cache=True, nogil=True)
def balance(rgb: np.ndarray, gains: np.ndarray, weights: np.ndarray, luma: np.ndarray, chroma: np.ndarray) -> None:
    """The start of :func:`iqalab.sim.camera._develop` in one pass over the raw planes ``rgb`` (3, H, W): white
    balance (float32 ``gains``) and clipping to [0, 1] in place, the luminance ``((r w0) + (g w1)) + (b w2)``
    into ``luma`` (H, W) and the red and blue chroma ``r - Y``, ``b - Y`` into ``chroma`` (2, H, W)."""
    _, h, w = rgb.shape
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for y in range(h):
        for x in range(w):
            r = rgb[0, y, x] * gains[0]
            g = rgb[1, y, x] * gains[1]
            b = rgb[2, y, x] * gains[2]
            r = r if r >= zero else zero
            r = r if r <= one else one
            g = g if g >= zero else zero
            g = g if g <= one else one
            b = b if b >= zero else zero
            b = b if b <= one else one
            rgb[0, y, x] = r
            rgb[1, y, x] = g
            rgb[2, y, x] = b
            lum = _luma(r, g, b, weights[0], weights[1], weights[2])
            luma[y, x] = lum
            chroma[0, y, x] = r - lum
            chroma[1, y, x] = b - lum


@njit(cache=True, nogil=True, inline="always")
def _recombine_row(lum: np.ndarray, s: np.ndarray, nr32: np.float32, blend: bool, c_r: np.ndarray,
                   c_b: np.ndarray, saturation: float, wide: bool, k_red: np.float32, k_blue: np.float32,
                   red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> None:
    """One row of :func:`recombine` (branch-free inner loops: vectorised)."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if blend:
        for x in range(lum.shape[0]):
            lum[x] = lum[x] + (s[x] - lum[x]) * nr32
    for x in range(lum.shape[0]):
        cr = _times(c_r[x], saturation, wide)
        cb = _times(c_b[x], saturation, wide)
        v = lum[x] + cr
        v = v if v >= zero else zero
        red[x] = v if v <= one else one
        v = (cr * k_red - cb * k_blue) + lum[x]
        v = v if v >= zero else zero
        green[x] = v if v <= one else one
        v = lum[x] + cb
        v = v if v >= zero else zero
        blue[x] = v if v <= one else one


@njit(cache=True, nogil=True)
def recombine(luma: np.ndarray, smooth: np.ndarray, nr: float, blend: bool, chroma: np.ndarray, saturation: float,
              wide: bool, k_red: np.float32, k_blue: np.float32, rgb: np.ndarray) -> None:
    """The middle of :func:`iqalab.sim.camera._develop` in one pass: the luma noise reduction
    ``Y + (S - Y) nr`` (if ``blend``; ``smooth`` = S), the saturation gain on the smoothed chroma (``wide``: a
    float64 gain, see :func:`_times`) and back to RGB, clipped to [0, 1] into ``rgb`` (3, H, W): ``r = Y + c_r``,
    ``b = Y + c_b``, ``g = ((c_r k_red) - (c_b k_blue)) + Y``. ``luma`` is updated in place."""
    nr32 = np.float32(nr)
    for y in range(rgb.shape[1]):
        _recombine_row(luma[y], smooth[y], nr32, blend, chroma[0, y], chroma[1, y], saturation, wide, k_red,
                       k_blue, rgb[0, y], rgb[1, y], rgb[2, y])


@njit(cache=True, nogil=True)
def recombine_encode(luma: np.ndarray, smooth: np.ndarray, nr: float, blend: bool, chroma: np.ndarray,
                     saturation: float, wide: bool, k_red: np.float32, k_blue: np.float32, rgb: np.ndarray,
                     pairs: np.ndarray, weights: np.ndarray, enc: np.ndarray, enc_luma: np.ndarray,
                     nan_at: np.ndarray) -> int:
    """:func:`recombine`, :func:`encode_table` and :func:`luma_of` in one pass, row by row while the row is in
    cache: ``rgb`` (3, H, W) as :func:`recombine` leaves it (already in [0, 1], so the encoding's clipping is the
    identity), its table encoding into ``enc`` (3, H, W) and the ``weights`` luma of ``enc`` into ``enc_luma``
    (H, W). Returns the number of NaN cells, as :func:`encode_table`, and writes their flat positions in ``enc``
    to the start of ``nan_at`` (int64, 3 H W): the caller then computes those values exactly and the luma again
    (the luma of a pixel with a NaN cell is NaN here)."""
    nr32 = np.float32(nr)
    n = np.float32(pairs.shape[0] - 2)
    plane = rgb.shape[1] * rgb.shape[2]
    w0, w1, w2 = weights[0], weights[1], weights[2]
    nan_cells = 0
    for y in range(rgb.shape[1]):
        red, green, blue = rgb[0, y], rgb[1, y], rgb[2, y]
        _recombine_row(luma[y], smooth[y], nr32, blend, chroma[0, y], chroma[1, y], saturation, wide, k_red,
                       k_blue, red, green, blue)
        e_r, e_g, e_b, out = enc[0, y], enc[1, y], enc[2, y], enc_luma[y]
        row_nans = 0
        for x in range(red.shape[0]):
            a = _encode_value(red[x], pairs, n)
            b = _encode_value(green[x], pairs, n)
            c = _encode_value(blue[x], pairs, n)
            row_nans += (a != a) + (b != b) + (c != c)
            e_r[x], e_g[x], e_b[x] = a, b, c
            out[x] = _luma(a, b, c, w0, w1, w2)
        if row_nans:  # the cells where the table's slope is unbounded: their positions, plane by plane
            for k in range(3):
                row = enc[k, y]
                for x in range(row.shape[0]):
                    if row[x] != row[x]:
                        nan_at[nan_cells] = k * plane + y * row.shape[0] + x
                        nan_cells += 1
    return nan_cells


@njit(cache=True, nogil=True)
def luma_of(planes: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
    """``((p0 w0) + (p1 w1)) + (p2 w2)`` of the planes (3, H, W) into ``out`` (H, W), as ``camera._luma``."""
    _, h, w = planes.shape
    for y in range(h):
        for x in range(w):
            out[y, x] = _luma(planes[0, y, x], planes[1, y, x], planes[2, y, x], weights[0], weights[1], weights[2])


@njit(cache=True, nogil=True)
def quantise(enc: np.ndarray, detail: np.ndarray, sharpness: np.float32, sharpen: bool, out8: np.ndarray) -> None:
    """The end of :func:`iqalab.sim.camera._develop` in place on ``enc`` (3, H, W): ``+ detail sharpness`` (if
    ``sharpen``), clipping to [0, 1], ``x 255`` and rounding half to even (8-bit values as float32); the same
    values as uint8 into the interleaved ``out8`` (H, W, 3)."""
    _, h, w = enc.shape
    zero = np.float32(0.0)
    one = np.float32(1.0)
    scale = np.float32(255.0)
    for y in range(h):  # row by row: the planes' rows (vectorised), then interleaved while they are in cache
        d = detail[y]
        for c in range(3):
            row = enc[c, y]
            for x in range(w):
                v = row[x]
                if sharpen:
                    v = v + d[x] * sharpness
                v = v if v >= zero else zero
                v = v if v <= one else one
                row[x] = np.rint(v * scale)
        r, g, b, o = enc[0, y], enc[1, y], enc[2, y], out8[y]
        for x in range(w):
            o[x, 0] = np.uint8(r[x])
            o[x, 1] = np.uint8(g[x])
            o[x, 2] = np.uint8(b[x])

# ------------------------------------------------------------------------------------- sensor noise, drawn inline
# numpy's ``Generator.standard_normal(dtype=np.float32)`` on its default bit generator (PCG64) costs about 14 ns a
# value here (an opaque call per 32 bits and a branch on the sign), a sixth of a 512 px render. The kernels below
# draw the same values from the same stream inside the sensor loop: PCG64 (XSL-RR 128/64, numpy's ``pcg64.h``)
# with 128-bit arithmetic spelt in 64-bit halves, the 32-bit halves of each 64-bit output buffered as numpy
# buffers them, and numpy's float32 ziggurat (``random_standard_normal_f`` of its ``distributions.c``; its tables
# as numba ships them). ``tests/test_sim_kernels.py`` checks values and the generator's state after them against
# numpy's own draws.

_KI, _WI, _FI = ziggurat.ki_float, ziggurat.wi_float, ziggurat.fi_float  # float32 normals, 256 layers
_R, _INV_R = ziggurat.ziggurat_nor_r_f, ziggurat.ziggurat_nor_inv_r_f  # the base layer's edge and its inverse
_M32 = np.uint64(0xFFFFFFFF)
_MULT_HI = np.uint64(2549297995355413924)  # PCG's default 128-bit multiplier, high and low halves
_MULT_LO = np.uint64(4865540595714422341)
_U32, _U58, _U64, _U63, _U1 = np.uint64(32), np.uint64(58), np.uint64(64), np.uint64(63), np.uint64(1)


@njit(cache=True, nogil=True, inline="always")
def _mulhi(a: np.uint64, b: np.uint64) -> np.uint64:
    """The high 64 bits of the 128-bit product of two uint64."""
    a_lo, a_hi, b_lo, b_hi = a & _M32, a >> _U32, b & _M32, b >> _U32
    p0, p1, p2, p3 = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    carry = ((p0 >> _U32) + (p1 & _M32) + (p2 & _M32)) >> _U32
    return p3 + (p1 >> _U32) + (p2 >> _U32) + carry


@njit(cache=True, nogil=True, inline="always")
def _next32(s: np.ndarray) -> np.uint32:
    """numpy's ``pcg64_next32`` on the state ``s`` = (state high, state low, increment high, increment low,
    has_uint32, uinteger), uint64: a buffered upper half, or a PCG64 step whose lower half is returned."""
    if s[4] != 0:
        s[4] = 0
        return np.uint32(s[5])
    hi, lo = s[0], s[1]
    new_lo = lo * _MULT_LO
    new_hi = _mulhi(lo, _MULT_LO) + lo * _MULT_HI + hi * _MULT_LO
    lo2 = new_lo + s[3]
    new_hi = new_hi + s[2] + (_U1 if lo2 < new_lo else np.uint64(0))
    s[0], s[1] = new_hi, lo2
    rot = new_hi >> _U58
    x = new_hi ^ lo2
    out = (x >> rot) | (x << ((_U64 - rot) & _U63))
    s[4] = 1
    s[5] = out >> _U32
    return np.uint32(out & _M32)


@njit(cache=True, nogil=True, inline="always")
def _next_float(s: np.ndarray) -> np.float32:
    """numpy's ``next_float``: the top 24 bits of a 32-bit draw over 2^24."""
    return np.float32(_next32(s) >> np.uint32(8)) * np.float32(1.0 / 16777216.0)


@njit(cache=True, nogil=True)
def _normal_rest(s: np.ndarray, r: np.uint32) -> np.float32:
    """The rest of numpy's ``random_standard_normal_f`` (ziggurat, 256 layers) after its first 32-bit draw ``r``
    missed the fast acceptance: the tail beyond the base layer or the wedge test, and on rejection numpy's loop
    again from a fresh draw."""
    while True:
        idx = r & np.uint32(0xFF)
        rabs = (r >> np.uint32(9)) & np.uint32(0x7FFFFF)
        x = np.float32(rabs) * _WI[idx]
        if (r >> np.uint32(8)) & np.uint32(1):
            x = -x
        if rabs < _KI[idx]:
            return x
        if idx == 0:  # the tail beyond the base layer
            while True:
                xx = -_INV_R * np.float32(math.log1p(-_next_float(s)))
                yy = -np.float32(math.log1p(-_next_float(s)))
                if yy + yy > xx * xx:
                    return -(_R + xx) if (rabs >> np.uint32(8)) & np.uint32(1) else _R + xx
        else:  # the wedge: a float32 left side against a float64 exponential, as numpy's C compares them
            left = (_FI[idx - 1] - _FI[idx]) * _next_float(s) + _FI[idx]
            if np.float64(left) < math.exp(-0.5 * np.float64(x) * np.float64(x)):
                return x
        r = _next32(s)


@njit(cache=True, nogil=True)
def standard_normal_f32(s: np.ndarray, out: np.ndarray) -> None:
    """Fill the flat float32 ``out`` with standard normals from the PCG64 state ``s`` (see :func:`_next32`), as
    ``Generator.standard_normal(out=out, dtype=np.float32)`` does: numpy's float32 ziggurat; ``s`` advances as
    numpy's state would. The state lives in registers on the fast path (99 % of the values)."""
    hi, lo, inc_hi, inc_lo, has, buffered = s[0], s[1], s[2], s[3], s[4], s[5]
    for k in range(out.shape[0]):
        if has != 0:
            has = np.uint64(0)
            r = np.uint32(buffered)
        else:
            new_lo = lo * _MULT_LO
            hi = _mulhi(lo, _MULT_LO) + lo * _MULT_HI + hi * _MULT_LO
            lo = new_lo + inc_lo
            hi = hi + inc_hi + (_U1 if lo < new_lo else np.uint64(0))
            rot = hi >> _U58
            x64 = hi ^ lo
            x64 = (x64 >> rot) | (x64 << ((_U64 - rot) & _U63))
            has = _U1
            buffered = x64 >> _U32
            r = np.uint32(x64 & _M32)
        idx = r & np.uint32(0xFF)
        rabs = (r >> np.uint32(9)) & np.uint32(0x7FFFFF)
        if rabs < _KI[idx]:
            x = np.float32(rabs) * _WI[idx]
            out[k] = -x if (r >> np.uint32(8)) & np.uint32(1) else x
        else:
            s[0], s[1], s[4], s[5] = hi, lo, has, buffered
            out[k] = _normal_rest(s, r)
            hi, lo, has, buffered = s[0], s[1], s[4], s[5]
    s[0], s[1], s[4], s[5] = hi, lo, has, buffered

_MASK64 = (1 << 64) - 1


def pcg64_state(rng: np.random.Generator) -> np.ndarray | None:
    """The state of ``rng``'s bit generator as the uint64 array the kernels draw from (see :func:`_next32`), or
    None when it is not numpy's PCG64 (the caller then draws with numpy). Hand it back with
    :func:`set_pcg64_state`; in between, ``rng`` must not be used (the two would draw the same values)."""
    generator = rng.bit_generator
    if type(generator) is not np.random.PCG64:
        return None
    state = generator.state
    value, inc = int(state["state"]["state"]), int(state["state"]["inc"])
    return np.array([value >> 64, value & _MASK64, inc >> 64, inc & _MASK64, int(state["has_uint32"]),
                     int(state["uinteger"])], dtype=np.uint64)


def set_pcg64_state(rng: np.random.Generator, state: np.ndarray) -> None:
    """Advance ``rng`` to ``state`` (an array of :func:`pcg64_state` after the kernels drew from it)."""
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (int(state[0]) << 64) | int(state[1]), "inc": (int(state[2]) << 64) | int(state[3])},
        "has_uint32": int(state[4]), "uinteger": int(state[5]),
    }


# ------------------------------------------------------------------------------------------- measurements
@njit(cache=True, nogil=True)
def _pairwise_leaf(a: np.ndarray, start: int, count: int, centre: np.float32, square: bool) -> np.float32:
    """A run of at most 128 values of :func:`_pairwise`: fewer than 8 summed in order from 0; else eight
    interleaved partial sums combined as ``((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))``, the remainder
    added in order. Unsigned indices: numba checks a signed index for a negative value (to wrap it around) at
    every load, which halves this loop's speed."""
    one = np.uint64(1)
    lo, n = np.uint64(start), np.uint64(count)
    end = lo + n
    if n < np.uint64(8):
        res = np.float32(0.0)
        i = lo
        while i < end:
            res += _term(a[i], centre, square)
            i += one
        return res
    r0, r1 = _term(a[lo], centre, square), _term(a[lo + one], centre, square)
    r2, r3 = _term(a[lo + np.uint64(2)], centre, square), _term(a[lo + np.uint64(3)], centre, square)
    r4, r5 = _term(a[lo + np.uint64(4)], centre, square), _term(a[lo + np.uint64(5)], centre, square)
    r6, r7 = _term(a[lo + np.uint64(6)], centre, square), _term(a[lo + np.uint64(7)], centre, square)
    i = lo + np.uint64(8)
    stop = end - n % np.uint64(8)
    while i < stop:
        r0 += _term(a[i], centre, square)
        r1 += _term(a[i + one], centre, square)
        r2 += _term(a[i + np.uint64(2)], centre, square)
        r3 += _term(a[i + np.uint64(3)], centre, square)
        r4 += _term(a[i + np.uint64(4)], centre, square)
        r5 += _term(a[i + np.uint64(5)], centre, square)
        r6 += _term(a[i + np.uint64(6)], centre, square)
        r7 += _term(a[i + np.uint64(7)], centre, square)
        i += np.uint64(8)
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < end:
        res += _term(a[i], centre, square)
        i += one
    return res


@njit(cache=True, nogil=True)
def _pairwise(a: np.ndarray, lo: int, n: int, centre: np.float32, square: bool) -> np.float32:
    """numpy's pairwise summation (``pairwise_sum`` of its float32 ``add`` reduction) of ``a[lo:lo + n]`` (1-D
    float32), or of ``(a[i] - centre)^2`` if ``square``: runs of up to 128 values as :func:`_pairwise_leaf`;
    longer runs split at half (rounded down to a multiple of 8) and the halves' sums added. A contiguous array of
    any shape is one such run in ``np.sum`` / ``mean`` / ``std``, so the sums are bit for bit numpy's
    (``tests/test_sim_kernels.py``). The recursion is walked with an explicit stack: a recursive version, called
    with a constant boolean, failed to link (numba left the symbol of its literal-boolean specialisation
    unresolved)."""
    if n <= 128:
        return _pairwise_leaf(a, lo, n, centre, square)
    depth = 64  # the tree of n values is about log2(n / 128) + 1 deep
    starts = np.empty(depth, dtype=np.int64)
    sizes = np.empty(depth, dtype=np.int64)
    stage = np.zeros(depth, dtype=np.int64)  # 0: left half next, 1: right half next, 2: add the two
    sums = np.empty(depth + 1, dtype=np.float32)
    top, held = 0, 0
    starts[0], sizes[0] = lo, n
    while top >= 0:
        size = sizes[top]
        if size <= 128:
            sums[held] = _pairwise_leaf(a, starts[top], size, centre, square)
            held += 1
            top -= 1
            continue
        half = size // 2
        half -= half % 8
        if stage[top] == 0:
            stage[top] = 1
            starts[top + 1], sizes[top + 1], stage[top + 1] = starts[top], half, 0
            top += 1
        elif stage[top] == 1:
            stage[top] = 2
            starts[top + 1], sizes[top + 1], stage[top + 1] = starts[top] + half, size - half, 0
            top += 1
        else:
            held -= 1
            sums[held - 1] = sums[held - 1] + sums[held]
            top -= 1
    return sums[0]


@njit(cache=True, nogil=True, inline="always")
def _term(v: np.float32, centre: np.float32, square: bool) -> np.float32:
    """A summand of :func:`_pairwise`: ``v``, or ``(v - centre)^2`` (two float32 operations, as numpy's
    ``x = arr - mean; x * x`` in ``std``)."""
    if square:
        d = v - centre
        return d * d
    return v


@njit(cache=True, nogil=True)
def _mean_of_sum(total: np.float32, n: int) -> np.float32:
    """numpy's float32 mean from its sum: the sum divided by the count in float64 (the count is an ``intp``),
    rounded to float32."""
    return np.float32(np.float64(total) / np.float64(n))


@njit(cache=True, nogil=True)
def sum_f32(a: np.ndarray) -> np.float32:
    """``np.sum`` of a flat float32 array, bit for bit (:func:`_pairwise`)."""
    return _pairwise(a, 0, a.shape[0], np.float32(0.0), False)


@njit(cache=True, nogil=True)
def mean_std(a: np.ndarray) -> tuple[np.float32, np.float32]:
    """``(a.mean(), a.std())`` of a flat float32 array, bit for bit numpy's (float32 results): the mean from
    :func:`_pairwise`; the variance as the pairwise sum of ``(a - mean)^2`` over the count, its square root in
    float32; without numpy's two full-size temporaries."""
    n = a.shape[0]
    mean = _mean_of_sum(_pairwise(a, 0, n, np.float32(0.0), False), n)
    var = _mean_of_sum(_pairwise(a, 0, n, mean, True), n)
    return mean, np.sqrt(var)


@njit(cache=True, nogil=True)
def edge_means(over: np.ndarray, detail: np.ndarray, threshold: np.float32, subject: np.ndarray,
               has_subject: bool, buf: np.ndarray) -> tuple[int, np.float32, int, np.float32]:
    """The halo statistics of :func:`iqalab.sim.camera._measure` from flat float32 arrays:
    ``edges = |detail| > threshold``; ``(edges.sum(), over[edges].mean(), subject_edges.sum(),
    over[subject_edges].mean())`` with ``subject_edges = edges & (subject > 0.5)`` if ``has_subject`` (else the
    edges again). In one pass the selected values are gathered in order into the two rows of ``buf`` (2, N + 1)
    without a branch (every value is written, the count advances where it is selected), then summed as numpy
    sums them (:func:`_pairwise`); a mean over no value is NaN (the caller does not use it)."""
    half = np.float32(0.5)
    zero = np.float32(0.0)
    on_edge, on_subject = buf[0], buf[1]
    n_edges = np.uint64(0)
    n_subject = np.uint64(0)
    for i in range(over.shape[0]):
        v = over[i]
        edge = abs(detail[i]) > threshold
        on_edge[n_edges] = v
        n_edges += np.uint64(edge)
        if has_subject:
            on_subject[n_subject] = v
            n_subject += np.uint64(edge & (subject[i] > half))
    nan = np.float32(np.nan)
    edges = int(n_edges)
    mean_edges = _mean_of_sum(_pairwise(on_edge, 0, edges, zero, False), edges) if edges else nan
    if not has_subject:
        return edges, mean_edges, edges, mean_edges
    subjects = int(n_subject)
    mean_subject = _mean_of_sum(_pairwise(on_subject, 0, subjects, zero, False), subjects) if subjects else nan
    return edges, mean_edges, subjects, mean_subject


@njit(cache=True, nogil=True)
def highlight_knee(raw: np.ndarray, knee: np.float32, stretch: np.float32, span: np.float32) -> None:
    """:func:`iqalab.sim.camera._highlight_knee` in place on flat float32 ``raw``: where a value exceeds
    ``knee``, ``((v - knee) stretch) / span + knee`` (float32, in numpy's order; ``stretch = 1 - knee`` and
    ``span = saturation - knee`` rounded to float32 as numpy rounds Python floats)."""
    for i in range(raw.shape[0]):
        v = raw[i]
        if v > knee:
            raw[i] = ((v - knee) * stretch) / span + knee


@njit(cache=True, nogil=True)
def squared_luma_difference(a: np.ndarray, b: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
    """``(luma of (a - b))^2`` of two (3, H, W) float32 stacks into ``out`` (H, W): per pixel the plane
    differences, ``((d0 w0) + (d1 w1)) + (d2 w2)`` (as :func:`luma_of`), squared; the noise measurement of
    :func:`iqalab.sim.camera._measure` without its two temporaries."""
    _, h, w = a.shape
    w0, w1, w2 = weights[0], weights[1], weights[2]
    for y in range(h):
        a0, a1, a2, b0, b1, b2, o = a[0, y], a[1, y], a[2, y], b[0, y], b[1, y], b[2, y], out[y]
        for x in range(w):
            e = _luma(a0[x] - b0[x], a1[x] - b1[x], a2[x] - b2[x], w0, w1, w2)
            o[x] = e * e


@njit(cache=True, nogil=True)
def halo_overshoot(luma: np.ndarray, base: np.ndarray, out: np.ndarray) -> None:
    """How far ``luma`` (H, W float32) leaves the 3 x 3 range of ``base`` (scipy's ``reflect`` borders):
    ``max(luma - max3(base), 0) + max(min3(base) - luma, 0)`` into ``out``, the halo measure of
    :func:`iqalab.sim.camera._measure` (maximum and minimum are exact, so their order does not matter)."""
    h, w = luma.shape
    hi = np.empty(w + 2, dtype=np.float32)  # the column maxima / minima of rows y - 1 .. y + 1, reflect-padded
    lo = np.empty(w + 2, dtype=np.float32)
    zero = np.float32(0.0)
    for y in range(h):
        top, mid, bottom = base[max(y - 1, 0)], base[y], base[min(y + 1, h - 1)]
        for x in range(w):
            m = top[x] if top[x] >= mid[x] else mid[x]
            hi[x + 1] = m if m >= bottom[x] else bottom[x]
            m = top[x] if top[x] <= mid[x] else mid[x]
            lo[x + 1] = m if m <= bottom[x] else bottom[x]
        hi[0], hi[w + 1], lo[0], lo[w + 1] = hi[1], hi[w], lo[1], lo[w]
        row, o = luma[y], out[y]
        for x in range(w):
            m = hi[x] if hi[x] >= hi[x + 1] else hi[x + 1]
            m = m if m >= hi[x + 2] else hi[x + 2]
            over = row[x] - m
            over = over if over >= zero else zero
            m = lo[x] if lo[x] <= lo[x + 1] else lo[x + 1]
            m = m if m <= lo[x + 2] else lo[x + 2]
            below = m - row[x]
            below = below if below >= zero else zero
            o[x] = over + below


@njit(cache=True, nogil=True)
def byte_difference(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``float32(a) - float32(b)`` of two uint8 arrays of one shape (flat views) into float32 ``out``."""
    for k in range(a.shape[0]):
        out[k] = np.float32(a[k]) - np.float32(b[k])


# ------------------------------------------------------------------------------------------------ scene light
@njit(cache=True, nogil=True)
def composite_light(person: np.ndarray, alpha: np.ndarray, background: np.ndarray, veil: np.float32,
                    add_veil: bool, light: np.ndarray, out: np.ndarray) -> None:
    """The light of :func:`iqalab.sim.camera._scene_light` in one pass over float32 planes (3, H, W): the
    person over the background, ``(person alpha) + (background (1 - alpha))`` (``alpha`` (H, W)), plus the
    veiling glare ``veil`` (if ``add_veil``), times the illuminant's float32 ``light[c]``, into ``out``."""
    one = np.float32(1.0)
    for c in range(3):
        gain = light[c]
        for y in range(out.shape[1]):
            p, a, b, o = person[c, y], alpha[y], background[c, y], out[c, y]
            for x in range(out.shape[2]):
                v = p[x] * a[x] + b[x] * (one - a[x])
                if add_veil:
                    v = v + veil
                o[x] = v * gain


@njit(cache=True, nogil=True)
def expose_drawing(colour: np.ndarray, state: np.ndarray, exposure: np.float32, full_well: np.float32,
                   gain: np.float32, gain2: np.float32, read2: np.float32, adc2: np.float32, saturation: np.float32,
                   raw: np.ndarray) -> int:
    """:func:`expose` with its draws made row by row from the PCG64 ``state`` (:func:`standard_normal_f32`, in
    the order of ``drawn`` (H, W, 3)): the same raw planes as ``expose`` after
    ``Generator.standard_normal(out=drawn, dtype=np.float32)``, without writing the draws out."""
    w = colour.shape[2]
    z = np.empty((w, 3), dtype=np.float32)
    hit = np.empty(w, dtype=np.uint8)
    clipped = 0
    for y in range(colour.shape[1]):
        standard_normal_f32(state, z.reshape(-1))
        clipped += _expose_row(colour, z, y, exposure, full_well, gain, gain2, read2, adc2, saturation, raw, hit)
    return clipped


@njit(cache=True, nogil=True)
def opponents(r: np.ndarray, g: np.ndarray, b: np.ndarray, rg: np.ndarray, yb: np.ndarray) -> None:
    """The opponent planes of Hasler & Suesstrunk's colourfulness from float32 (H, W) planes: ``rg = r - g``,
    ``yb = 0.5 (r + g) - b`` (float32, in numpy's order), into ``rg`` and ``yb``."""
    half = np.float32(0.5)
    for y in range(r.shape[0]):
        for x in range(r.shape[1]):
            rg[y, x] = r[y, x] - g[y, x]
            yb[y, x] = half * (r[y, x] + g[y, x]) - b[y, x]


@njit(cache=True, nogil=True)
def luma_and_clipping(clean: np.ndarray, weights: np.ndarray, scale: np.float32, hi_level: np.float32,
                      lo_level: np.float32, luma: np.ndarray, clipped_hi: np.ndarray, clipped_lo: np.ndarray) -> None:
    """From the clean render's 8-bit values (3, H, W float32), in one pass: its luma (as :func:`luma_of`) divided
    by ``scale`` into ``luma``, and as float32 0 / 1 whether the brightest channel is at least ``hi_level``
    (``clipped_hi``) and whether that luma is at most ``lo_level`` (``clipped_lo``)."""
    w0, w1, w2 = weights[0], weights[1], weights[2]
    one, zero = np.float32(1.0), np.float32(0.0)
    for y in range(clean.shape[1]):
        r, g, b = clean[0, y], clean[1, y], clean[2, y]
        out, hi, lo = luma[y], clipped_hi[y], clipped_lo[y]
        for x in range(r.shape[0]):
            v = _luma(r[x], g[x], b[x], w0, w1, w2) / scale
            out[x] = v
            top = r[x] if r[x] >= g[x] else g[x]
            top = top if top >= b[x] else b[x]
            hi[x] = one if top >= hi_level else zero
            lo[x] = one if v <= lo_level else zero
