"""The PIL image modes diffaug reads as 8- or 16-bit pixels: one table for augmenting and FID.

Pillow opens a 16-bit grayscale PNG as ``I;16`` (older Pillow: ``I``, 32-bit signed), a
big-endian 16-bit TIFF as ``I;16B``, a 32-bit integer TIFF as ``I``. ``I`` counts as 16-bit
when its values fit 0..65535, which :func:`bit_depth` checks; other modes (P, 1, CMYK, F, ...)
are not augmented: convert them first.
"""

from __future__ import annotations

from PIL import Image

__all__ = ["ALPHA_MODES", "BIT_DEPTH_BY_MODE", "EIGHT_BIT_MODES", "SIXTEEN_BIT_MAX",
           "SIXTEEN_BIT_MODES", "UnsupportedModeError", "bit_depth"]

EIGHT_BIT_MODES = ("L", "LA", "RGB", "RGBA")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
BIT_DEPTH_BY_MODE = dict.fromkeys(EIGHT_BIT_MODES, 8) | dict.fromkeys(SIXTEEN_BIT_MODES, 16)
#: Modes whose last channel is alpha (passed through unchanged by the augmenter).
ALPHA_MODES = ("LA", "RGBA")
SIXTEEN_BIT_MAX = 2**16 - 1
_WIDE_MODE = "I"  # 32-bit signed integers: 16-bit data only if the values fit


class UnsupportedModeError(ValueError):
    """An image whose mode (or, for mode I, whose values) diffaug cannot read as 8/16-bit."""


def bit_depth(image: Image.Image) -> int:
    """8 or 16: the bit depth of ``image``'s pixel values; raises :class:`UnsupportedModeError`."""
    depth = BIT_DEPTH_BY_MODE.get(image.mode)
    if depth is None:
        raise UnsupportedModeError(
            f"unsupported image mode {image.mode!r}; convert it to one of "
            f"{', '.join(BIT_DEPTH_BY_MODE)} (8- or 16-bit) first.")
    if image.mode == _WIDE_MODE:
        low, high = image.getextrema()
        if low < 0 or high > SIXTEEN_BIT_MAX:
            raise UnsupportedModeError(
                f"mode 'I' values {low}..{high} do not fit 16 bits (0..{SIXTEEN_BIT_MAX}); "
                "save the image as 8- or 16-bit.")
    return depth
