"""Inception pool features of image files, as pytorch-fid computes them.

The network, its block table and its weights are pytorch-fid's own (`InceptionV3`, fetched
through `load_state_dict_from_url(FID_WEIGHTS_URL)` into `$TORCH_HOME/hub/checkpoints`). What
differs is where pytorch-fid's users get stuck: each image is resized to 299x299 on its own
(the same bilinear `F.interpolate` that `InceptionV3(resize_input=True)` applies to a batch), so
folders of mixed sizes work; 16-bit images are scaled by their full range instead of being
clipped by PIL's `convert("RGB")`; images are decoded on threads while the network runs.

torch, torchvision and pytorch-fid are the `fid` extra: they are imported inside functions only,
so `import diffaug` keeps working without them.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from diffaug.io import read_image
from diffaug.modes import SIXTEEN_BIT_MAX, SIXTEEN_BIT_MODES, bit_depth

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

__all__ = [
    "FID_EXTRA_HINT",
    "INCEPTION_SIZE",
    "FidExtraMissingError",
    "InceptionFeatures",
    "InceptionWeightsError",
    "ensure_inception_weights",
    "inception_weights_path",
    "list_images",
    "load_inception_input",
    "require_fid_extra",
    "resolve_device",
]

FID_EXTRA_HINT = "diffaug fid needs the fid extra: pip install 'diffaug[fid]'"
INCEPTION_SIZE = 299
FLOAT_MODE = "F"  # 32-bit float intensities, read as [0, 1]


class FidExtraMissingError(ImportError):
    """torch, torchvision or pytorch-fid is not installed."""


class InceptionWeightsError(RuntimeError):
    """pytorch-fid's Inception weights are neither cached nor downloadable, or do not load."""


def require_fid_extra() -> None:
    """Raise `FidExtraMissingError` with the install hint unless the `fid` extra is importable."""
    try:
        import pytorch_fid.inception  # noqa: F401
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as err:
        raise FidExtraMissingError(FID_EXTRA_HINT) from err


def resolve_device(device: str) -> str:
    """`"auto"` means CUDA when available, else CPU; anything else must be a torch device this
    machine has (a `ValueError` says which is missing, before any network is built)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device!r} is not a torch device (try cpu, cuda, cuda:0)") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; "
                             "use --device cpu or auto")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return str(resolved)


def inception_weights_path() -> Path:
    """Where pytorch-fid's `load_state_dict_from_url` caches the FID Inception weights."""
    import torch.hub
    from pytorch_fid.inception import FID_WEIGHTS_URL

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(FID_WEIGHTS_URL).path).name


def ensure_inception_weights() -> Path:
    """Return the cached weights file, downloading it the way pytorch-fid does when missing.

    Offline, this is the one place that fails: with a single line naming the file, its URL and
    the folder to put it in, instead of a traceback from deep inside the network constructor.
    """
    import torch.hub
    from pytorch_fid.inception import FID_WEIGHTS_URL

    path = inception_weights_path()
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(path), progress=False)
    except OSError as err:  # URLError, HTTPError and socket errors are all OSErrors
        raise InceptionWeightsError(
            f"pytorch-fid needs the Inception weights {path.name} and cannot download them "
            f"({_first_line(err)}): fetch {FID_WEIGHTS_URL} and put it at {path} "
            "($TORCH_HOME/hub/checkpoints/)"
        ) from err
    return path


def list_images(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Sorted image files of `folder` with pytorch-fid's extensions (any letter case)."""
    from pytorch_fid.fid_score import IMAGE_EXTENSIONS

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder, an image list or a .npz statistics file")
    candidates = root.rglob("*") if recursive else root.glob("*")
    files = sorted(
        p for p in candidates if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS
    )
    if not files:
        hint = "" if recursive else " (use --recursive for nested folders)"
        raise ValueError(f"{root}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}){hint}")
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
        unit = _to_unit_rgb(read_image(Path(path)))
    except ValueError as err:  # UnreadableImageError included
        raise ValueError(f"{path}: {err}") from err
    resized = F.interpolate(
        unit[None], size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
    )
    return resized[0]


def _to_unit_rgb(image: Image.Image) -> torch.Tensor:
    import torch
    import torchvision.transforms.functional as TF

    if image.mode in SIXTEEN_BIT_MODES:
        bit_depth(image)  # mode I: its values must fit 16 bits
        unit = np.asarray(image, dtype=np.float32) / np.float32(SIXTEEN_BIT_MAX)
    elif image.mode == FLOAT_MODE:
        unit = np.array(image, dtype=np.float32)  # a writable copy, as torch wants
        if unit.min() < 0 or unit.max() > 1:
            raise ValueError(f"mode F values outside [0, 1] (range {unit.min():g}.."
                             f"{unit.max():g}); save it as 8- or 16-bit")
    else:
        return TF.to_tensor(image.convert("RGB"))
    return torch.from_numpy(unit).expand(3, -1, -1)


class InceptionFeatures:
    """Callable: image files -> (n, dims) float64 pool features of pytorch-fid's InceptionV3.

    Builds the network once (checking the weights first), then runs it in batches of
    `batch_size` while `num_workers` threads decode and resize the next batch.
    """

    def __init__(
        self,
        *,
        dims: int = 2048,
        batch_size: int = 50,
        device: str = "auto",
        num_workers: int | None = None,
    ) -> None:
        require_fid_extra()
        import torch
        from pytorch_fid.inception import InceptionV3

        if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
            raise ValueError(f"dims must be one of {list(InceptionV3.BLOCK_INDEX_BY_DIM)}, got {dims}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dims = dims
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        weights = ensure_inception_weights()
        try:
            network = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[dims]], resize_input=False)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
            raise InceptionWeightsError(
                f"{weights}: not pytorch-fid's Inception weights ({_first_line(err)}); "
                "delete it to download it again"
            ) from err
        _fold_batch_norms(network.eval())
        # channels_last lets oneDNN run the convolutions about 1.5x faster on CPU; the
        # features agree with the default layout to float32 rounding.
        self.network = network.to(self.device, memory_format=torch.channels_last)

    def __call__(
        self, files: Sequence[str | os.PathLike], *, on_batch: Callable[[int], None] | None = None
    ) -> NDArray[np.float64]:
        """Features of `files` in order; `on_batch(n)` is called after each batch of n images."""
        import torch

        features = np.empty((len(files), self.dims), dtype=np.float64)
        start = 0
        with torch.inference_mode():
            for batch in self._batches(files):
                batch = batch.to(self.device, memory_format=torch.channels_last)
                pooled = self.network(batch)[0]
                # Blocks below pool3 are feature maps: pytorch-fid averages them spatially.
                pooled = torch.nn.functional.adaptive_avg_pool2d(pooled, output_size=(1, 1))
                features[start : start + len(batch)] = pooled.flatten(1).cpu().numpy()
                start += len(batch)
                if on_batch is not None:
                    on_batch(len(batch))
        return features

    def _batches(self, files: Sequence[str | os.PathLike]) -> Iterator[torch.Tensor]:
        import torch

        # Equal batches of at most batch_size (156 images: 4 x 39, not 50, 50, 50, 6): a small
        # last batch costs nearly as much time as a full one on CPU.
        size = math.ceil(len(files) / max(1, math.ceil(len(files) / self.batch_size))) or 1
        chunks = [files[i : i + size] for i in range(0, len(files), size)]
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers)) as pool:

            def submit(chunk: Sequence[str | os.PathLike]) -> list[Future[torch.Tensor]]:
                return [pool.submit(load_inception_input, path) for path in chunk]

            ahead = submit(chunks[0]) if chunks else []
            for index in range(len(chunks)):
                current = ahead
                ahead = submit(chunks[index + 1]) if index + 1 < len(chunks) else []
                yield torch.stack([future.result() for future in current])


def _fold_batch_norms(network: torch.nn.Module) -> None:
    """Fold every eval-mode BatchNorm into the convolution before it (torch's own
    `fuse_conv_bn_eval`): the same affine map, one pass over the activations less."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from torchvision.models.inception import BasicConv2d

    for block in network.modules():
        if isinstance(block, BasicConv2d):
            block.conv = fuse_conv_bn_eval(block.conv, block.bn)
            block.bn = torch.nn.Identity()


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
