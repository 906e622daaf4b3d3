"""Images as they are (issue 26): the one decode path (:func:`iqalab.data.cache.decode_image`, shared by ingest,
the cache and scoring) gives the pixels a viewer shows for 16-bit greyscale, EXIF-rotated, CMYK, palette and
transparent files. Every file is built here with PIL/numpy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from iqalab.data.cache import decode_image
from iqalab.data.schema import DataError


def _grey3(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_greyscale_is_scaled_not_white(tmp_path, fmt):
    wide = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    path = tmp_path / f"grey16.{fmt.lower()}"
    Image.fromarray(wide).save(path, format=fmt)
    with Image.open(path) as img:
        assert img.mode == "I;16", "the file really holds 16-bit greyscale"
    expected = _grey3(np.rint(wide * (255 / 65535)).astype(np.uint8))
    decoded = decode_image(path)
    np.testing.assert_array_equal(decoded, expected)
    assert decoded.min() == 0 and decoded.max() == 251, "the full range, not clipped to white"
    assert decode_image(path, 32).shape == (32, 32, 3)


def _quadrants() -> np.ndarray:
    """40x24 RGB: red top-left, green top-right, blue bottom-left, white bottom-right (orientation visible)."""
    img = np.zeros((24, 40, 3), dtype=np.uint8)
    img[:12, :20] = (255, 0, 0)
    img[:12, 20:] = (0, 255, 0)
    img[12:, :20] = (0, 0, 255)
    img[12:, 20:] = (255, 255, 255)
    return img


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation, turn", [(3, 2), (6, -1), (8, 1)])  # EXIF 274: 180, 90 cw, 90 ccw
def test_exif_orientation_is_applied(tmp_path, fmt, orientation, turn):
    stored = Image.fromarray(_quadrants())
    plain, rotated = tmp_path / f"plain.{fmt.lower()}", tmp_path / f"rotated.{fmt.lower()}"
    exif = Image.Exif()
    exif[274] = orientation
    options = {"quality": 100} if fmt == "JPEG" else {}
    stored.save(plain, format=fmt, **options)
    stored.save(rotated, format=fmt, exif=exif.tobytes(), **options)
    as_stored = decode_image(plain)  # the same pixel data without the tag
    np.testing.assert_array_equal(decode_image(rotated), np.rot90(as_stored, turn))
    if orientation != 3:
        assert decode_image(rotated).shape == (40, 24, 3)
        assert decode_image(rotated, max_side=20).shape == (20, 12, 3)  # region detection sees it upright too


def test_cmyk_is_converted(tmp_path):
    cmyk = np.zeros((8, 8, 4), dtype=np.uint8)
    cmyk[:4, :, 1:3] = 255  # magenta + yellow: red
    cmyk[4:, :, 3] = 255  # black
    path = tmp_path / "cmyk.tif"
    Image.fromarray(cmyk, mode="CMYK").save(path)
    decoded = decode_image(path)
    assert (decoded[:4] == (255, 0, 0)).all() and (decoded[4:] == 0).all()


def test_palette_with_and_without_transparency(tmp_path):
    index = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette = [10, 20, 30, 200, 100, 50, 0, 0, 255] + [0] * (256 * 3 - 9)
    img = Image.fromarray(index, mode="P")
    img.putpalette(palette)
    opaque, transparent = tmp_path / "p.png", tmp_path / "p_t.png"
    img.save(opaque)
    img.save(transparent, transparency=1)  # index 1 transparent
    colours = np.array(palette[:9], dtype=np.uint8).reshape(3, 3)
    np.testing.assert_array_equal(decode_image(opaque), colours[index])
    expected = colours[index].copy()
    expected[index == 1] = 255  # composited over white, not the palette's hidden colour
    np.testing.assert_array_equal(decode_image(transparent), expected)


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0  # fully transparent
    rgba[1, 1, 3] = 128  # half
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    decoded = decode_image(path).astype(int)
    assert tuple(decoded[2, 2]) == (200, 0, 0), "opaque pixels unchanged"
    assert tuple(decoded[0, 0]) == (255, 255, 255), "transparent pixels are the white background"
    alpha = 128 / 255
    want = np.array([200 * alpha + 255 * (1 - alpha), 255 * (1 - alpha), 255 * (1 - alpha)])
    np.testing.assert_allclose(decoded[1, 1], want, atol=1)


def test_float_image_outside_unit_range_is_refused(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.full((4, 4), 3.5, dtype=np.float32), mode="F").save(path)
    with pytest.raises(DataError, match=r"f\.tif: floating-point image with values outside \[0, 1\]"):
        decode_image(path)
    ok = tmp_path / "f_ok.tif"
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F").save(ok)
    assert (decode_image(ok) == 128).all()
