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

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _reflect(j: int, n: int) -> int:
    """scipy.ndimage's ``reflect`` border (``d c b a | a b c d``) for an index at most ``n - 1`` outside."""
    if j < 0:
        return -j - 1
    if j >= n:
        return 2 * n - j - 1
    return j


@njit(cache=True, nogil=True)
def correlate_rows(img: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """Correlate each row (last axis) of the float32 ``(L, N, M)`` ``img`` with the symmetric float32 kernel
    ``w`` (odd length ``2r + 1``, ``r < M``), reflect borders, into ``out``.

    Per output, as :func:`iqalab.sim.camera._correlate`'s tap sums: ``x[j] w[r]``, then for ``i = 0 .. r - 1``
    ``+ (x[j - r + i] + x[j + r - i]) w[i]``, each operation rounded to float32.
    """
    L, N, M = img.shape
    r = w.shape[0] // 2
    wr = w[r]
    p = np.empty(M + 2 * r, dtype=np.float32)  # one row with its reflected borders
    for a in range(L):
        for b in range(N):
            x = img[a, b]
            o = out[a, b]
            p[r:r + M] = x
            for j in range(r):
                p[j] = x[r - 1 - j]
                p[r + M + j] = x[M - 1 - j]
            for j in range(M):
                o[j] = x[j] * wr
            for i in range(r):  # taps outermost; the inner loop runs along contiguous slices (vectorised)
                wi = w[i]
                left = p[i:i + M]
                right = p[2 * r - i:2 * r - i + M]
                for j in range(M):
                    o[j] += (left[j] + right[j]) * wi


@njit(cache=True, nogil=True)
def correlate_columns(img: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """:func:`correlate_rows` along the middle axis of ``(L, N, M)`` (``r < N``); rows are combined whole, so
    the inner loop runs along contiguous memory."""
    L, N, M = img.shape
    r = w.shape[0] // 2
    wr = w[r]
    for a in range(L):
        for b in range(N):
            o = out[a, b]
            x = img[a, b]
            for j in range(M):
                o[j] = x[j] * wr
            for i in range(r):
                top = img[a, _reflect(b - r + i, N)]
                bottom = img[a, _reflect(b + r - i, N)]
                wi = w[i]
                for j in range(M):
                    o[j] += (top[j] + bottom[j]) * wi


@njit(cache=True, nogil=True)
def encode_table(rgb: np.ndarray, pairs: np.ndarray, out: np.ndarray) -> int:
    """:func:`iqalab.sim.camera._encode`'s clip and table interpolation over flat float32 ``rgb`` (clipped to
    [0, 1] in place) into ``out``, with ``pairs`` the (entries, 2) float32 (value, slope) table: per value
    ``t = v n``, ``cell = floor(t)``, ``slope[cell] (t - cell) + value[cell]`` (the values being clipped first,
    every cell lies inside the table, which ``take(mode="clip")`` ensured before). A NaN slope leaves NaN for the
    caller to compute exactly; returns how many values did."""
    n = np.float32(pairs.shape[0] - 2)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for k in range(rgb.shape[0]):
        v = rgb[k]
        v = v if v >= zero else zero
        rgb[k] = v if v <= one else one
    nan_cells = 0
    for k in range(rgb.shape[0]):  # the gather in its own loop: the clipping above vectorises
        t = rgb[k] * n
        i = int(t)  # t >= 0: truncation is the floor (and i <= n, inside the table)
        t = t - np.float32(i)
        e = pairs[i, 1] * t + pairs[i, 0]
        nan_cells += e != e
        out[k] = e
    return nan_cells


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
    _, h, w = colour.shape
    zero = np.float32(0.0)
    clipped = 0
    for y in range(h):
        for x in range(w):
            hit = False
            for c in range(3):
                e = colour[c, y, x] * exposure
                sd = e if e >= zero else zero
                sd = sd * gain2
                sd = sd + read2
                sd = sd + adc2
                sd = np.sqrt(sd)
                clean = e if e <= full_well else full_well
                clean = clean * gain
                clean = clean if clean <= saturation else saturation
                raw[0, c, y, x] = clean
                if clean >= saturation:
                    hit = True
                noisy = drawn[y, x, c] * sd
                noisy = noisy / gain
                noisy = noisy + e
                noisy = noisy if noisy <= full_well else full_well
                noisy = noisy * gain
                noisy = noisy if noisy >= zero else zero
                noisy = noisy if noisy <= saturation else saturation
                raw[1, c, y, x] = noisy
            if hit:
                clipped += 1
    return clipped


@njit(cache=True, nogil=True)
def _times(x: np.float32, factor: float, wide: bool) -> np.float32:
    """``x`` times a scalar ``factor`` as numpy does it for a float32 array: in float32 for a Python float
    (rounded to float32 first), in float64 and then rounded for a float64 numpy scalar (``wide``)."""
    if wide:
        return np.float32(np.float64(x) * factor)
    return x * np.float32(factor)


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
            lum = r * weights[0] + g * weights[1]
            lum = lum + b * weights[2]
            luma[y, x] = lum
            chroma[0, y, x] = r - lum
            chroma[1, y, x] = b - lum


@njit(cache=True, nogil=True)
def recombine(luma: np.ndarray, smooth: np.ndarray, nr: float, blend: bool, chroma: np.ndarray, saturation: float,
              wide: bool, k_red: np.float32, k_blue: np.float32, rgb: np.ndarray) -> None:
    """The middle of :func:`iqalab.sim.camera._develop` in one pass: the luma noise reduction
    ``Y + (S - Y) nr`` (if ``blend``; ``smooth`` = S), the saturation gain on the smoothed chroma (``wide``: a
    float64 gain, see :func:`_times`) and back to RGB, clipped to [0, 1] into ``rgb`` (3, H, W): ``r = Y + c_r``,
    ``b = Y + c_b``, ``g = ((c_r k_red) - (c_b k_blue)) + Y``. ``luma`` is updated in place."""
    _, h, w = rgb.shape
    nr32 = np.float32(nr)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    for y in range(h):  # row by row, branch-free inner loops (vectorised)
        lum, red, green, blue = luma[y], rgb[0, y], rgb[1, y], rgb[2, y]
        c_r, c_b = chroma[0, y], chroma[1, y]
        if blend:
            s = smooth[y]
            for x in range(w):
                lum[x] = lum[x] + (s[x] - lum[x]) * nr32
        for x in range(w):
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
def luma_of(planes: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
    """``((p0 w0) + (p1 w1)) + (p2 w2)`` of the planes (3, H, W) into ``out`` (H, W), as ``camera._luma``."""
    _, h, w = planes.shape
    for y in range(h):
        for x in range(w):
            out[y, x] = (planes[0, y, x] * weights[0] + planes[1, y, x] * weights[1]) + planes[2, y, x] * weights[2]


@njit(cache=True, nogil=True)
def quantise(enc: np.ndarray, detail: np.ndarray, sharpness: np.float32, sharpen: bool) -> None:
    """The end of :func:`iqalab.sim.camera._develop` in place on ``enc`` (3, H, W): ``+ detail sharpness`` (if
    ``sharpen``), clipping to [0, 1], ``x 255`` and rounding half to even (8-bit values as float32)."""
    _, h, w = enc.shape
    zero = np.float32(0.0)
    one = np.float32(1.0)
    scale = np.float32(255.0)
    for c in range(3):
        for y in range(h):
            for x in range(w):
                v = enc[c, y, x]
                if sharpen:
                    v = v + detail[y, x] * sharpness
                v = v if v >= zero else zero
                v = v if v <= one else one
                enc[c, y, x] = np.rint(v * scale)
