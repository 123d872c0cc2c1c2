"""Every kind of bad input gets its own quarantine reason; good images decode to the canonical form."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from tests.data.lakes import blob_image
from toolchain.data.decode import DecodeLimits, Decoded, Rejected, decode_image, perceptual_hash

LIMITS = DecodeLimits(min_side=16, max_pixels=4_000_000)


def _smooth(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **kwargs)
    return buf.getvalue()


def _reason(data: bytes, limits: DecodeLimits = LIMITS) -> str:
    result = decode_image(data, 32, limits)
    assert isinstance(result, Rejected), result
    return result.reason


def test_good_jpeg_decodes_to_canonical_square() -> None:
    result = decode_image(_encode(_smooth(120, 200)), 32, LIMITS)
    assert isinstance(result, Decoded)
    assert result.array.shape == (32, 32, 3) and result.array.dtype == np.uint8
    assert (result.width, result.height) == (200, 120)
    assert len(result.pixel_sha256) == 64


def test_png_with_alpha_and_greyscale_become_rgb() -> None:
    rgba = np.dstack([_smooth(40, 40), np.full((40, 40), 128, np.uint8)])
    assert isinstance(decode_image(_encode(rgba, "PNG"), 32, LIMITS), Decoded)
    grey = _smooth(40, 40)[..., 0]
    result = decode_image(_encode(grey, "PNG"), 32, LIMITS)
    assert isinstance(result, Decoded) and result.array.shape == (32, 32, 3)


def test_exif_orientation_is_applied() -> None:
    array = _smooth(40, 80)  # landscape
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    result = decode_image(buf.getvalue(), 32, LIMITS)
    assert isinstance(result, Decoded)
    assert (result.width, result.height) == (40, 80)  # portrait once oriented
    plain = decode_image(_encode(array, quality=95), 32, LIMITS)
    assert isinstance(plain, Decoded)
    assert not np.array_equal(result.array, plain.array)


def test_empty_file() -> None:
    assert _reason(b"") == "empty"


def test_text_named_jpg_is_not_an_image() -> None:
    assert _reason(b"this is not a picture\n" * 10) == "not_an_image"


def test_truncated_jpeg() -> None:
    data = _encode(_smooth(100, 100))
    assert _reason(data[: len(data) // 2]) == "truncated"


def test_corrupt_png_body() -> None:
    data = bytearray(_encode(_smooth(64, 64), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 200] = b"\x00" * 192
    assert _reason(bytes(data)) in {"corrupt", "truncated"}


def test_too_small() -> None:
    assert _reason(_encode(_smooth(8, 8))) == "too_small"


def _patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    out = bytearray(data)
    sof = out.index(b"\xff\xc0")
    out[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(out)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _patch_jpeg_size(_encode(_smooth(32, 32)), 40000, 40000)
    assert _reason(bomb) == "too_large"
    # Also under our own limit even when PIL would accept it.
    big = _patch_jpeg_size(_encode(_smooth(32, 32)), 3000, 3000)
    assert _reason(big, DecodeLimits(min_side=16, max_pixels=1_000_000)) == "too_large"


def test_perceptual_hash_is_stable_for_near_duplicates_and_differs_otherwise() -> None:
    a = blob_image(np.random.default_rng(1)).astype(np.uint8)
    # The same frame resized and re-encoded at a lower JPEG quality: a typical duplicate in a lake.
    b = np.asarray(Image.open(io.BytesIO(_encode(np.asarray(Image.fromarray(a).resize((56, 56))), quality=40))))
    c = blob_image(np.random.default_rng(2)).astype(np.uint8)  # a different picture
    distance = lambda x, y: bin(perceptual_hash(x) ^ perceptual_hash(y)).count("1")  # noqa: E731
    assert distance(a, b) <= 4
    assert distance(a, c) > 16


@pytest.mark.parametrize("size", [32, 48, 128])
def test_hash_works_for_any_canonical_size(size: int) -> None:
    result = decode_image(_encode(_smooth(100, 100)), size, LIMITS)
    assert isinstance(result, Decoded) and 0 <= result.phash < 2**63


def test_fast_jpeg_path_agrees_with_pillow() -> None:
    pytest.importorskip("simplejpeg")
    from toolchain.data.decode import _decode_plain_jpeg, _decode_with_pillow

    data = _encode(blob_image(np.random.default_rng(3), size=96).astype(np.uint8), quality=90)
    fast = _decode_plain_jpeg(data, 32, LIMITS)
    slow = _decode_with_pillow(data, 32, LIMITS)
    assert isinstance(fast, Decoded) and isinstance(slow, Decoded)
    assert (fast.width, fast.height) == (slow.width, slow.height) == (96, 96)
    # Both scale inside libjpeg-turbo's DCT; their chroma upsampling differs slightly.
    assert np.abs(fast.array.astype(int) - slow.array.astype(int)).mean() < 8.0
    assert bin(fast.phash ^ slow.phash).count("1") <= 8
    truncated = data[: len(data) // 2]
    assert _decode_plain_jpeg(truncated, 32, LIMITS) == Rejected(reason="truncated", detail="Premature end of JPEG file")
    assert isinstance(_decode_with_pillow(truncated, 32, LIMITS), Rejected)
