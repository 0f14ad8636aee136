"""Image files as pytorch-fid's InceptionV3 input: which files count, and how they are scaled.

8-bit images are scaled exactly as pytorch-fid scales them; what differs is where pytorch-fid's
users get stuck: each image is resized to 299x299 on its own (the same bilinear
`F.interpolate` that `InceptionV3(resize_input=True)` applies to a batch), so folders of mixed
sizes work, and 16-bit images are scaled by their full range instead of being clipped by PIL's
`convert("RGB")`. DICOM and NIfTI files (the `dicom` extra) count too: their middle frame as
display intensities (`diffaug.medical.read_unit`: modality LUT, first window). torch is
imported inside functions only (the `fid` extra).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from diffaug.fid.inception import INCEPTION_SIZE
from diffaug.io import read_image
from diffaug.medical import is_medical, read_unit
from diffaug.modes import SIXTEEN_BIT_MAX, SIXTEEN_BIT_MODES, bit_depth

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

__all__ = ["PYTORCH_FID_IMAGE_EXTENSIONS", "list_images", "load_inception_input"]

# pytorch-fid's own table (pytorch_fid.fid_score.IMAGE_EXTENSIONS): the files `diffaug fid`
# takes from a folder, as `python -m pytorch_fid` does. Not diffaug.io's
# BALANCE_IMAGE_EXTENSIONS, the files `diffaug balance` reads. A test checks it against
# pytorch-fid's.
PYTORCH_FID_IMAGE_EXTENSIONS = frozenset(
    {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}
)
FLOAT_MODE = "F"  # 32-bit float intensities, read as [0, 1]


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Sorted image files of `folder` with pytorch-fid's extensions (any letter case)."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder, an image list or a .npz statistics file")
    candidates = root.rglob("*") if recursive else root.glob("*")
    files = sorted(
        p for p in candidates
        if p.is_file() and (p.suffix[1:].lower() in PYTORCH_FID_IMAGE_EXTENSIONS or is_medical(p))
    )
    if not files:
        hint = "" if recursive else " (use --recursive for nested folders)"
        raise ValueError(
            f"{root}: no images ({', '.join(sorted(PYTORCH_FID_IMAGE_EXTENSIONS))}, DICOM, "
            f"NIfTI){hint}"
        )
    return files


def load_inception_input(path: str | os.PathLike) -> torch.Tensor:
    """One image as a float32 tensor (3, 299, 299) in [0, 1], ready for `InceptionV3`.

    8-bit images are scaled exactly like pytorch-fid (PIL `convert("RGB")`, `ToTensor`);
    16-bit images (the modes of `diffaug.modes`, mode I included when its values fit) and float
    images by their full range, where PIL's `convert("RGB")` would clip them at 255. The resize
    is pytorch-fid's batch resize applied to this image alone.
    """
    import torch.nn.functional as F

    try:
        unit = (_unit_tensor(read_unit(path)) if is_medical(path)
                else _to_unit_rgb(read_image(Path(path))))
    except ValueError as err:  # UnreadableImageError included
        raise ValueError(f"{path}: {err}") from err
    resized = F.interpolate(
        unit[None], size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
    )
    return resized[0]


def _unit_tensor(unit: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, 3) intensities in [0, 1] as a (3, H, W) tensor."""
    import torch

    tensor = torch.from_numpy(unit)
    return tensor.expand(3, -1, -1) if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def _to_unit_rgb(image: Image.Image) -> torch.Tensor:
    import torch

    if image.mode in SIXTEEN_BIT_MODES:
        bit_depth(image)  # mode I: its values must fit 16 bits
        unit = np.asarray(image, dtype=np.float32) / np.float32(SIXTEEN_BIT_MAX)
    elif image.mode == FLOAT_MODE:
        unit = np.array(image, dtype=np.float32)  # a writable copy, as torch wants
        if unit.min() < 0 or unit.max() > 1:
            raise ValueError(f"mode F values outside [0, 1] (range {unit.min():g}.."
                             f"{unit.max():g}); save it as 8- or 16-bit")
    else:
        # torchvision's ToTensor: uint8 to float32, divided by 255 (the same rounding).
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / np.float32(255)
        return torch.from_numpy(rgb).permute(2, 0, 1)
    return torch.from_numpy(unit).expand(3, -1, -1)
