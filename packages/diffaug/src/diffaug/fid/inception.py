"""pytorch-fid's FID Inception: the network, its block table and its weights.

As pytorch-fid splits it, this module is the network (`inception.py` there) and
`diffaug.fid.score` the metric (`fid_score.py`). `build_inception` builds pytorch-fid's own
`InceptionV3` with its BatchNorms folded, returning pooled features of `dims` dimensions
(`BLOCK_INDEX_BY_DIM`).

Its weights: pytorch-fid loads them through torch.hub's `load_state_dict_from_url`, whose
`torch.load(weights_only=False)` runs whatever code is pickled into a file planted under the
weights' name in `$TORCH_HOME/hub/checkpoints` (the very place our missing-weights message sends
users). Here the cached file is read with `torch.load(weights_only=True)`: tensors in plain
containers, nothing that can run; its SHA-256 is checked against the prefix its name carries
(torch.hub's convention, which torch.hub itself checks on download only), and another hash is
reported as a warning (a converted copy of the same weights has one). pytorch-fid
then builds its network from that state dict (`pytorch_fid_loads`).

torch, torchvision and pytorch-fid are imported inside functions only (the `fid` extra), so
the constants here are available without them.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from diffaug.io import sha256_file

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

__all__ = [
    "BLOCK_INDEX_BY_DIM",
    "FID_DIMS",
    "FID_WEIGHTS_SHA256_PREFIX",
    "FID_WEIGHTS_URL",
    "INCEPTION_SIZE",
    "InceptionWeightsError",
    "build_inception",
    "ensure_inception_weights",
    "first_line",
    "inception_weights_path",
    "load_inception_state_dict",
    "pytorch_fid_loads",
]

# pytorch-fid's own constants (pytorch_fid.inception), written out so that the onnxruntime
# engine starts without importing pytorch-fid, whose import pulls in torchvision (about a
# second); a test checks them against pytorch-fid's.
BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
#: The feature sizes pytorch-fid offers (its --dims choices).
FID_DIMS = tuple(BLOCK_INDEX_BY_DIM)
INCEPTION_SIZE = 299  # side of the network's input images, in pixels
# The start of the weights file's SHA-256, carried by its name (torch.hub's HASH_REGEX).
FID_WEIGHTS_SHA256_PREFIX = "6726825d"


class InceptionWeightsError(RuntimeError):
    """pytorch-fid's Inception weights are neither cached nor downloadable, or do not load."""


def build_inception(weights: Path, dims: int) -> torch.nn.Module:
    """pytorch-fid's `InceptionV3` for `dims` (weights from `load_inception_state_dict`,
    BatchNorms folded, eval mode) returning pooled features (n, dims): blocks below pool3 are
    feature maps, which pytorch-fid averages spatially.

    Raises:
        InceptionWeightsError: the weights file is not pytorch-fid's or does not fit the network.
    """
    import torch
    from pytorch_fid.inception import InceptionV3

    state = load_inception_state_dict(weights)
    try:
        with pytorch_fid_loads(state):
            network = InceptionV3([BLOCK_INDEX_BY_DIM[dims]], resize_input=False)
    except RuntimeError as err:  # load_state_dict: missing, unexpected or misshapen tensors
        raise not_the_weights(weights, first_line(err)) from err
    _fold_batch_norms(network.eval())

    class PooledInception(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inception = network

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            block = self.inception(images)[0]
            return torch.nn.functional.adaptive_avg_pool2d(block, output_size=(1, 1)).flatten(1)

    return PooledInception().eval()


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


def inception_weights_path() -> Path:
    """Where pytorch-fid's `load_state_dict_from_url` caches the FID Inception weights."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(FID_WEIGHTS_URL).path).name


def ensure_inception_weights() -> Path:
    """Return the cached weights file, downloading it (hash checked) when missing.

    Offline, this is the one place that fails: with a single line naming the file, its URL and
    the folder to put it in, instead of a traceback from deep inside the network constructor.
    """
    import torch.hub

    path = inception_weights_path()
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(path), progress=False,
                                       hash_prefix=FID_WEIGHTS_SHA256_PREFIX)
    # URLError, HTTPError and socket errors are OSErrors; a download with another hash is a
    # RuntimeError (torch.hub deletes it).
    except (OSError, RuntimeError) as err:
        raise InceptionWeightsError(
            f"pytorch-fid needs the Inception weights {path.name} and cannot download them "
            f"({first_line(err)}): fetch {FID_WEIGHTS_URL} and put it at {path} "
            "($TORCH_HOME/hub/checkpoints/)"
        ) from err
    return path


def load_inception_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of pytorch-fid's weights file `path`, read with
    `torch.load(weights_only=True)`: a file holding anything but tensors in plain containers is
    refused without running any of it. A SHA-256 that does not start with
    `FID_WEIGHTS_SHA256_PREFIX` (not the published file) is a warning.

    Raises:
        InceptionWeightsError: an unreadable file or not a state dict (the file is named).
    """
    import torch

    try:
        digest = sha256_file(path)
    except OSError as err:
        raise not_the_weights(path, f"cannot read it: {err.strerror}") from err
    if not digest.startswith(FID_WEIGHTS_SHA256_PREFIX):
        # Not a refusal: nothing in the file can run (weights_only below), and a re-saved or
        # converted copy of the same weights has another hash. The numbers may then differ
        # from published FIDs, which the user must be told.
        warnings.warn(f"{path}: its SHA-256 starts {digest[:len(FID_WEIGHTS_SHA256_PREFIX)]}, "
                      f"not {FID_WEIGHTS_SHA256_PREFIX} as its name says: not the published "
                      "file, so FID may differ from published values; read as tensors only",
                      stacklevel=2)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # Not torch's message: it suggests weights_only=False, the very thing to avoid here.
        raise not_the_weights(path, "it holds objects other than tensors, refused "
                                    "unread") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise not_the_weights(path, first_line(err)) from err
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise not_the_weights(path, "not a state dict of named tensors")
    return state


@contextlib.contextmanager
def pytorch_fid_loads(state: dict[str, torch.Tensor]) -> Iterator[None]:
    """While pytorch-fid builds its network, its `load_state_dict_from_url(FID_WEIGHTS_URL)`
    returns `state` instead of unpickling the cached file. pytorch-fid offers no other way to
    hand it weights; the swap lasts for the constructor call only."""
    from pytorch_fid import inception

    def verified_weights(url: str, *args, **kwargs) -> dict[str, torch.Tensor]:
        if url != FID_WEIGHTS_URL:
            raise InceptionWeightsError(f"pytorch-fid asked for unexpected weights {url}")
        return state

    original = inception.load_state_dict_from_url
    inception.load_state_dict_from_url = verified_weights
    try:
        yield
    finally:
        inception.load_state_dict_from_url = original


def not_the_weights(path: Path, reason: str) -> InceptionWeightsError:
    """The one-line error for a weights file that must not be used, with the fix."""
    return InceptionWeightsError(
        f"{path}: not pytorch-fid's Inception weights ({reason}); delete it to download it "
        f"again, or fetch {FID_WEIGHTS_URL} and put it there"
    )


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
