"""Reading images at their real bit depth and turning them into network inputs.

torchvision's default loader (`Image.open(p).convert("RGB")`) clips 16-bit pixels to 255, so a
16-bit medical PNG becomes almost white. Here every pixel is scaled by the maximum of its own
bit depth (8-bit / 255, 16-bit / 65535) before anything else happens. DICOM and NIfTI files
(`qclassify.medical`) are read as display intensities in [0, 1] (modality LUT, window).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import resize_image
from tqdm.auto import tqdm

from qclassify.medical import ImageRef, is_medical, read_medical

__all__ = [
    "CACHE_LIMIT_BYTES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "ImageRef",
    "find_unreadable",
    "list_images",
    "make_preprocess",
    "normalise_batch",
    "read_image",
    "read_resized",
    "unreadable_reason",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# The normalisation every torchvision ImageNet classifier was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Decoded, resized training and validation images are kept in memory up to this size.
CACHE_LIMIT_BYTES = 4 * 2**30
# Integer modes whose full scale is 16 bits. PIL opens 16-bit grayscale PNG/TIFF as "I;16*";
# older Pillow versions (and some TIFF writers) give "I", which we read as 16-bit too.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SIXTEEN_BIT_MAX = 65535.0
_EIGHT_BIT_MAX = 255.0
# 8-bit modes kept as one channel (alpha dropped); everything else 8-bit goes through RGB.
_GRAYSCALE_MODES = ("1", "L", "LA", "La")


def _pixels(image: Image.Image) -> np.ndarray:
    """Pixel intensities in [0, 1] as float32, shape (H, W) or (H, W, 3)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return _unit(np.asarray(image), _SIXTEEN_BIT_MAX)
    if image.mode == "F":
        # Float images carry no full scale of their own; read them as intensities in [0, 1].
        return _unit(np.asarray(image), 1.0)
    if image.mode in _GRAYSCALE_MODES:
        return _unit(np.asarray(image.convert("L")), _EIGHT_BIT_MAX)
    # RGB, RGBA (alpha dropped), P/PA (palette expanded), CMYK, YCbCr, ...
    return _unit(np.asarray(image.convert("RGB")), _EIGHT_BIT_MAX)


def _unit(raw: np.ndarray, full_scale: float) -> np.ndarray:
    """``raw / full_scale`` in float64, clipped to [0, 1], as float32. Unsigned 8- and 16-bit
    pixels at their own full scale are looked up in a table of exactly those values instead:
    the same numbers, several times faster than the float64 pass over every pixel."""
    table = _UNIT_TABLES.get((raw.dtype.kind, raw.dtype.itemsize, full_scale))
    if table is not None:
        return table[raw]
    return np.clip(raw.astype(np.float64) / full_scale, 0.0, 1.0).astype(np.float32)


def _unit_table(bits: int) -> np.ndarray:
    full_scale = 2.0**bits - 1
    return np.clip(np.arange(2**bits, dtype=np.float64) / full_scale, 0.0, 1.0).astype(np.float32)


# (dtype kind, bytes per value, full scale) -> the float32 intensity of every value.
_UNIT_TABLES = {("u", 1, _EIGHT_BIT_MAX): _unit_table(8), ("u", 2, _SIXTEEN_BIT_MAX): _unit_table(16)}


def read_image(path: str | Path, *, frame: int | None = None,
               window: tuple[float, float] | None = None) -> torch.Tensor:
    """Read an image as a float tensor (C, H, W) in [0, 1], C = 1 (grayscale) or 3 (colour).

    The scale follows the file's bit depth: 8-bit values are divided by 255, 16-bit values
    (PIL modes ``I;16*`` and ``I``) by 65535; float images (``F``) are clipped to [0, 1].
    Alpha channels are dropped and palette images expanded to RGB. An image above PIL's
    decompression-bomb warning size is read with a warning that names it (PIL's own names no
    file). A DICOM/NIfTI file gives one frame (`frame`, default the middle one) through its
    modality LUT and first window (or `window` = (center, width)); see `qclassify.medical`.

    Raises:
        ValueError: the file is missing, not an image, truncated, or a decompression bomb.
        ImportError: a DICOM/NIfTI file without the ``qclassify[dicom]`` extra.
    """
    if is_medical(path):
        try:
            values = read_medical(path, frame=frame, window=window)
        except ValueError as err:
            raise ValueError(f"cannot read image {path}: {err}") from err
        return _channels_first(torch.from_numpy(values))
    try:
        with Image.open(path) as image:
            _warn_if_huge(path, image)
            image.load()
            values = _pixels(image)
    # DecompressionBombError (a plain Exception): more pixels than PIL's MAX_IMAGE_PIXELS allows.
    except (OSError, UnidentifiedImageError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    return _channels_first(torch.from_numpy(values))


def _channels_first(tensor: torch.Tensor) -> torch.Tensor:
    """(H, W) or (H, W, C) as (C, H, W)."""
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _warn_if_huge(path: str | Path, image: Image.Image) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.width * image.height
    if limit is not None and pixels > limit:
        warnings.warn(f"{path} has {pixels} pixels, more than PIL's decompression-bomb limit of "
                      f"{limit}; reading it anyway (check that it is a genuine image)",
                      # Attributed to this line whoever reads the image, so Python's
                      # once-per-location rule shows it once per file.
                      stacklevel=1)


def make_preprocess(image_size: int, *, augment: bool = False) -> v2.Compose:
    """The input transform of every model: resize to a square, 3 channels, ImageNet statistics.

    Grayscale images are repeated to three channels (section 2.3.1: "grayscale converted to
    RGB") after resizing, which gives the same result as before and costs a third as much.
    With `augment` (training only), a random horizontal flip and a small random affine map
    (rotation within ±10°, shift within 5 %, scale 0.9-1.1, black fill) follow the resize: the
    label-preserving changes a probe's position and angle make.
    """
    return v2.Compose([_resize(image_size), *_after_resize(augment=augment).transforms])


def _resize(image_size: int) -> v2.Resize:
    return v2.Resize((image_size, image_size), antialias=True)


def read_resized(ref: ImageRef, image_size: int, *,
                 window: tuple[float, float] | None = None) -> torch.Tensor:
    """One sample read (`read_image`) and resized to a square, (C, S, S): `make_preprocess`'s
    resize as one call of its kernel, without the per-image overhead of a transform object.

    Raises:
        ValueError: see `read_image`.
    """
    image = read_image(ref.path, frame=ref.frame, window=window)
    return resize_image(image, [image_size, image_size], antialias=True)


def normalise_batch(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Resized images (C, S, S), C = 1 or 3, as one network input (B, 3, S, S): grayscale
    repeated to three channels and the ImageNet statistics applied to the whole batch at once,
    the same float32 operations `make_preprocess` applies image by image."""
    batch = torch.stack([image.expand(3, -1, -1) for image in images])
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype).view(1, 3, 1, 1)
    return batch.sub_(mean).div_(std)


def _after_resize(*, augment: bool) -> v2.Compose:
    """`make_preprocess` after its resize: what is applied to a cached resized image."""
    steps: list[v2.Transform] = []
    if augment:
        steps += [
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
        ]
    steps += [v2.RGB(), v2.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    return v2.Compose(steps)


def list_images(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Image files (by extension, case-insensitive; DICOM/NIfTI files too, `qclassify.medical`)
    in `folder`, sorted.

    Dot-entries (``.DS_Store``, ``._x.png``, ``.ipynb_checkpoints/``) are never listed nor
    searched. Without `recursive` only the folder's own files count: the rule of dataset
    discovery, which is diffaug's, so ``qclassify compare --augmented`` sees the files that
    ``diffaug balance`` used. `recursive` searches every sub-folder (``qclassify predict``).
    """
    return sorted(path for path in _visible_files(Path(folder), recursive=recursive)
                  if path.suffix.lower() in IMAGE_EXTENSIONS or is_medical(path))


def _visible_files(folder: Path, *, recursive: bool) -> Iterator[Path]:
    """Files (or links to files) in `folder` whose names do not start with a dot, and with
    `recursive` those of its sub-folders that are not dot-folders, as `Path.rglob` walks
    them: links to folders are not followed, unreadable sub-folders are passed over.
    `os.scandir` knows each entry's type from the listing, so no file is stat'ed."""
    with os.scandir(folder) as entries:
        visible = [entry for entry in entries if not entry.name.startswith(".")]
    for entry in visible:
        if entry.is_file():
            yield Path(entry.path)
        elif recursive and entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(PermissionError):
                yield from _visible_files(Path(entry.path), recursive=True)


def find_unreadable(paths: Sequence[str | Path], *, progress: bool = False) -> dict[str, str]:
    """Map each path that cannot be decoded to the reason; readable paths are left out.

    Files are decoded in one thread per CPU: Pillow releases the GIL while it decodes, so the
    check of a large folder takes a fraction of a serial pass; the result is in `paths` order.

    Args:
        progress: show a progress bar (tqdm, on stderr) while the files are decoded.
    """
    problems = {}
    # No bar for no files: tqdm would leave its empty bar's line behind.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, \
            tqdm(total=len(paths), desc="check images", unit="image", leave=False,
                 disable=not (progress and paths)) as bar:
        for path, reason in zip(paths, pool.map(_unreadable_reason, paths), strict=True):
            bar.update()
            if reason is not None:
                problems[str(path)] = reason
    return problems


def _unreadable_reason(path: str | Path) -> str | None:
    """Why `path` cannot be decoded, or None."""
    try:
        read_image(path)
    except ValueError as err:
        return unreadable_reason(err)
    return None


def unreadable_reason(err: ValueError) -> str:
    """Why a file could not be read, from `read_image`'s error: the decoder's own message
    (the file is named beside it by whoever reports it)."""
    return str(err.__cause__ or err)


class ImageDataset(Dataset):
    """(image tensor, label) pairs for a list of files; label -1 when there is none.

    `paths` may hold `ImageRef` (file, frame) items for frames of multi-frame files; `window`
    = (center, width) replaces the window of DICOM/NIfTI files. With `augment_seed`, every image is randomly augmented (see `make_preprocess`) and the
    dataset is indexed by ``(epoch, index)`` keys (`qclassify.batches.make_loader` with
    ``epoch_keys=True``): the augmentation of an image is drawn from a generator seeded by
    (augment_seed, epoch, index) alone, so it is the same whatever the number of loader
    workers and whatever else drew from torch's global generator.
    """

    def __init__(
        self, paths: Sequence[str | Path | ImageRef], labels: Sequence[int] | None,
        image_size: int, *, augment_seed: int | None = None, cache: bool = False,
        window: tuple[float, float] | None = None,
    ) -> None:
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.refs = [path if isinstance(path, ImageRef) else ImageRef(Path(path))
                     for path in paths]
        self.paths = [ref.path for ref in self.refs]
        self.window = window
        self.labels = list(labels) if labels is not None else [-1] * len(self.paths)
        self.augment_seed = augment_seed
        self.resize = _resize(image_size)
        self.after_resize = _after_resize(augment=augment_seed is not None)
        self.resized: list[torch.Tensor] | None = None
        if cache:
            self.resized = self._decode_all(image_size)

    def _decode_all(self, image_size: int) -> list[torch.Tensor] | None:
        """Every image decoded and resized once (what stays the same every epoch), in memory;
        None, with a warning, when that would take more than `CACHE_LIMIT_BYTES` (the images
        are then decoded at every access). Filled before any loader worker starts, so workers
        share it."""
        worst_case = len(self.paths) * 3 * image_size * image_size * 4  # float32 RGB
        if worst_case > CACHE_LIMIT_BYTES:
            warnings.warn(f"{len(self.paths)} images at {image_size} px need up to "
                          f"{worst_case / 2**30:.1f} GiB in memory, more than the "
                          f"{CACHE_LIMIT_BYTES / 2**30:.0f} GiB cache limit: decoding them at "
                          "every epoch instead", stacklevel=3)
            return None
        return [self.resize(self._read(index)) for index in range(len(self.refs))]

    def _read(self, index: int) -> torch.Tensor:
        ref = self.refs[index]
        return read_image(ref.path, frame=ref.frame, window=self.window)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        image = (self.resized[index] if self.resized is not None
                 else self.resize(self._read(index)))
        if self.augment_seed is None:
            return self.after_resize(image), self.labels[index]
        if epoch is None:
            raise TypeError("an augmenting ImageDataset is indexed by (epoch, index) keys")
        seed = np.random.SeedSequence([self.augment_seed, epoch, index]).generate_state(1)[0]
        # torchvision's random transforms draw from torch's global generator: fork it so the
        # draw depends on the key only and leaves the caller's generator where it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return self.after_resize(image), self.labels[index]
