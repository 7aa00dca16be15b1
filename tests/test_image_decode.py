"""Decoding one image (`jobs.images.decode`, the one path of training, evaluation and serving) for what cameras and
array libraries hand over: 16-bit greyscale files and pixel arrays scaled to 0..1. No Ray."""
import io

import numpy as np
import pytest
from PIL import Image

from jobs.images import decode


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_a_16_bit_greyscale_image_is_scaled_not_clipped(fmt):
    """Pillow's convert("L") clips a 16-bit image's values above 255: a ramp over 0..65535 came out nearly all
    white (mean 254.5). Scaled, its grey levels keep their order and its mean is the 16-bit mean / 257."""
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    grey = decode(encoded(Image.fromarray(ramp), fmt), (64, 64), 1)[..., 0]
    assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255
    assert abs(grey.mean() - ramp.mean() / 257) < 0.5
    assert (np.diff(grey.ravel().astype(int)) >= 0).all()              # the ramp stays a ramp
    np.testing.assert_array_equal(grey, np.rint(ramp / 257).astype(np.uint8))
    rgb = decode(encoded(Image.fromarray(ramp), fmt), (64, 64), 3)      # an RGB model: the grey in each channel
    assert rgb.shape == (64, 64, 3) and (rgb == grey[..., None]).all()
    # Opened as 32-bit "I" (older Pillow releases, 32-bit TIFFs): scaled the same; 8-bit values in one are kept.
    wide = encoded(Image.fromarray(ramp.astype(np.int32)), "TIFF")
    assert Image.open(io.BytesIO(wide)).mode == "I"
    np.testing.assert_array_equal(decode(wide, (64, 64), 1)[..., 0], grey)
    small = encoded(Image.fromarray((ramp // 257).astype(np.int32)), "TIFF")
    np.testing.assert_array_equal(decode(small, (64, 64), 1)[..., 0], (ramp // 257).astype(np.uint8))


def test_pixel_arrays_scaled_to_0_1_are_refused_saying_how_to_fix_them():
    with pytest.raises(ValueError, match=r"lie in 0\.\.1 .*multiply by 255"):
        decode(np.full((8, 8), 0.5), (8, 8), 1)
    # Whole numbers are pixels whatever their range: a black-and-white mask of 0 and 1 is taken as it is.
    mask = np.eye(8)
    np.testing.assert_array_equal(decode(mask, (8, 8), 1)[..., 0], mask.astype(np.uint8))
    # Fractions in 0..255 (an array resized in floating point) round to the nearest level, not down.
    assert decode(np.full((8, 8), 127.7), (8, 8), 1).max() == 128
