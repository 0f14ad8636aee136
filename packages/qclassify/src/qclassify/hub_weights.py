"""Weights files read as tensors only: torch hub checkpoints (hash-checked) and users' state dicts.

torchvision's `get_model(name, weights=...)` loads its checkpoint through torch.hub's
`load_state_dict_from_url`, whose `torch.load(weights_only=False)` runs whatever code is pickled
into a file planted under the checkpoint's name in `$TORCH_HOME/hub/checkpoints`. Here the
cached file is read with `torch.load(weights_only=True)`: tensors in plain containers, nothing
that can run; a SHA-256 that does not start with the prefix its name carries (torch.hub's
`HASH_REGEX` convention, which torch.hub checks on download only) is a warning. A missing
file is downloaded through torch.hub, hash checked.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import torch
import torch.hub

from qclassify.runfolder import read_torch

__all__ = ["WeightsUnavailableError", "cached_checkpoint_path", "load_hub_state_dict",
           "read_state_dict", "unusable_checkpoint"]

HASH_CHUNK = 1 << 20  # bytes read at a time while hashing a checkpoint
_FIX = "delete it to download it again, or use --weights none or --weights PATH"


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be downloaded or read."""


def cached_checkpoint_path(url: str) -> Path:
    """Where torch.hub caches the checkpoint of `url`: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / PurePosixPath(urlparse(url).path).name


def load_hub_state_dict(url: str) -> dict[str, torch.Tensor]:
    """The state dict of the checkpoint at `url`, from torch.hub's cache (downloaded there,
    hash checked, when missing), read as tensors only; a cached file whose SHA-256 does not
    start with the prefix its name carries is a warning.

    Raises:
        WeightsUnavailableError: the download fails, or the cached file is not a plain state
            dict (the file is named, with the fix).
    """
    path = cached_checkpoint_path(url)
    prefix = _hash_prefix(path.name)
    if not path.is_file():
        _download(url, path, prefix)
    digest = _sha256_of_file(path)
    if not digest.startswith(prefix):
        # A warning, not a refusal: nothing in it can run (weights_only), as for diffaug's FID
        # weights; the user must know the starting point is not the published checkpoint.
        warnings.warn(f"{path}: its SHA-256 starts {digest[:len(prefix)]}, not {prefix} as its "
                      "name says: not the published checkpoint; read as tensors only",
                      stacklevel=2)
    try:
        return read_state_dict(path)
    except ValueError as err:
        raise WeightsUnavailableError(f"{err}: {_FIX}") from err


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict file (or of the ``state_dict`` entry of a checkpoint dict),
    read with `torch.load(weights_only=True)`.

    Raises:
        ValueError: unreadable, not a torch file, or holding anything but tensors in plain
            containers (refused unread: unpickling it could run code), naming the file.
    """
    try:
        loaded = read_torch(path)
    except ValueError as err:
        if isinstance(err.__cause__, pickle.UnpicklingError):
            # Not torch's message: it suggests weights_only=False, the very thing to avoid.
            raise ValueError(f"weights file {path} is not a plain state dict of tensors; "
                             "anything else is refused unread (unpickling it could run "
                             "code)") from err
        raise
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights file {path} does not hold a state dict")
    return state


def _hash_prefix(name: str) -> str:
    found = torch.hub.HASH_REGEX.search(name)
    if found is None or not found.group(1):
        raise ValueError(f"checkpoint {name} carries no hash in its name to check it against")
    return found.group(1)


def _download(url: str, path: Path, prefix: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=True)
    # URLError and socket errors are OSErrors; another hash is a RuntimeError (the download is
    # deleted by torch.hub).
    except (OSError, RuntimeError) as err:
        reason = " ".join(str(err).split())
        raise WeightsUnavailableError(
            f"could not download {url} to {path} ({reason}): no network? use --weights none "
            "or --weights PATH"
        ) from err


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError as err:
        raise unusable_checkpoint(path, f"cannot read it: {err.strerror}") from err
    return digest.hexdigest()


def unusable_checkpoint(path: Path, reason: str) -> WeightsUnavailableError:
    """The one-line error for a cached checkpoint that cannot be used, with the fix."""
    return WeightsUnavailableError(
        f"{path}: not the pretrained checkpoint its name promises ({reason}): {_FIX}"
    )
