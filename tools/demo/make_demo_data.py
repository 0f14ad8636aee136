"""Procedural, angiography-like demo dataset: dark branching vessels, some with a stenosis.

A fresh clone can run the whole pipeline on it with no download. The default counts
are the paper's worked example of eq. 3 (280 normal vs 102 stenosis in train, so
ceil(0.7 * 280) - 102 = 94 synthetic images at ratio 0.7).

    python tools/demo/make_demo_data.py OUT [--size 224 --train 280 102 --val 60 22
                                             --test 60 60 --seed 0 --format png|dicom --quiet]

writes ``OUT/{train,val,test}/{normal,stenosis}/<split>_<class>_<index>.png`` (8-bit L) and
``OUT/demo-data.json`` (options, library versions and per-image ground truth: the narrowest
relative vessel radius and, for stenosis images, the lesion's position and depth).

``--format dicom`` writes the same images as ``.dcm`` files instead: single-frame, XA-like
(Modality XA, 12-bit MONOCHROME2 stored in 16 bits, the 8-bit pixels rescaled to 0-4095, a
full-range window), every `IMAGES_PER_PATIENT` consecutive images of a split and class sharing
one PatientID (so patients never cross splits), and UIDs from ``pydicom.uid.generate_uid`` with
entropy sources derived from the seed and the image, so the same seed gives the same bytes.
It needs pydicom (``pip install 'diffaug[dicom]'``).

Each image is drawn from its own generator seeded by (seed, split, class, index), so the output
is byte-identical for the same options whatever order images are made in. Only numpy, scipy,
pillow and click (a dependency of both packages) are needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import click
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, gaussian_filter1d, zoom
from scipy.signal import fftconvolve

CLASSES = ("normal", "stenosis")
SPLITS = ("train", "val", "test")
# Train reproduces eq. 3's worked example; val keeps the train imbalance (60:22 ~ 280:102) so
# early stopping sees the deployment prior; test is balanced 60/60 like the paper's test set
# (section 3: "among 60 negative samples ... among 60 positive samples").
DEFAULT_COUNTS: dict[str, tuple[int, int]] = {
    "train": (280, 102), "val": (60, 22), "test": (60, 60)}
METADATA_FILE = "demo-data.json"
MIN_SIZE = 32
FORMATS = ("png", "dicom")
SUFFIXES = {"png": ".png", "dicom": ".dcm"}
IMAGES_PER_PATIENT = 3  # DICOM: consecutive images of one split and class per PatientID
DICOM_BITS_STORED = 12
XA_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.12.1"  # X-Ray Angiographic Image Storage

# Geometry is specified in pixels of a REFERENCE_SIZE image and scaled with the requested size.
# The scene is a zoomed view of one main artery (the trunk) with a few side branches, as in
# stenosis-grading crops; only the trunk carries lesions. Difficulty was tuned with
# tools/demo/check_demo_learnability.py (96 px, 40 epochs, seed 0; the goal, learnable but not
# trivial, is a test AUC in 0.75-0.98):
# lesion depth 0.40-0.70 gave a test AUC of 0.737, 0.50-0.80 gave 0.981, these 0.45-0.75 give
# 0.966; more natural variation (0.2) with shorter lesions (sigma 4.5-8) fell to 0.521.
REFERENCE_SIZE = 224
SAMPLE_SPACING = 0.4  # centreline sample spacing in output pixels, well below a pixel
TRUNK_RADIUS = (8.0, 12.0)  # reference pixels at the trunk's root
BRANCHES, SUB_BRANCHES = (1, 3), (0, 1)  # inclusive count ranges, per trunk and per branch
CATHETER_PROBABILITY = 0.3
# Vessels vary in width by a smooth factor in (1 - v, 1 + v): mild "narrowings" occur in both
# classes, so a lesion is told apart by its depth, not by its presence.
NATURAL_WIDTH_VARIATION = 0.1
LESION_DEPTH = (0.45, 0.75)  # fractional radius reduction at the lesion centre
LESION_SIGMA = (6.0, 10.0)  # lesion half-length (gaussian sigma along the trunk), reference px
LESION_ZONE = (0.15, 0.75)  # lesions sit on this fraction of the trunk, away from its tip...
LESION_MIN_RADIUS = 5.0  # ...where it is at least this wide (reference pixels)
PHOTONS = (250.0, 600.0)  # quantum noise: Poisson counts per unit intensity
TIP_FADE = 0.2  # fraction of a vessel's length over which its tip fades out
MIN_DISC_RADIUS = 0.5  # output pixels: thinner vessels are drawn this wide, proportionally fainter
N_RADIUS_LEVELS = 10


@dataclass(frozen=True)
class DemoImage:
    """One generated image and its ground truth.

    ``min_relative_radius`` is the smallest ratio, over every vessel, of the drawn radius to
    the vessel's smooth tapered radius: above ``1 - NATURAL_WIDTH_VARIATION`` for normal
    images, at most ``(1 + NATURAL_WIDTH_VARIATION) * (1 - LESION_DEPTH[0])`` for stenosis.
    """

    pixels: np.ndarray  # (size, size) uint8
    stenosis: bool
    min_relative_radius: float
    lesion_xy: tuple[float, float] | None
    lesion_depth: float | None


@dataclass
class _Vessel:
    points: np.ndarray  # (n, 2) x, y in output pixels, SAMPLE_SPACING apart
    tapered: np.ndarray  # (n,) smooth radius: linear taper from the root to the tip
    relative: np.ndarray  # (n,) drawn radius / tapered radius
    level: int  # 0 trunk, 1 branch, 2 sub-branch, -1 catheter

    @property
    def radius(self) -> np.ndarray:
        return self.tapered * self.relative


def _smooth_noise(rng: np.random.Generator, n: int, correlation: float) -> np.ndarray:
    """Unit-variance noise with a gaussian autocorrelation of `correlation` samples."""
    pad = int(4 * correlation) + 1
    noise = gaussian_filter1d(rng.standard_normal(n + 2 * pad), correlation)[pad : pad + n]
    return noise * np.sqrt(2 * np.sqrt(np.pi) * correlation)


def _grow(rng, start, heading, length, root_radius, tip_fraction, level, scale) -> _Vessel:
    """A tortuous centreline (smoothly wandering heading) with a tapering, varying radius."""
    n = max(int(length / SAMPLE_SPACING), 8)
    u = np.linspace(0.0, 1.0, n)
    bend = rng.uniform(-0.8, 0.8) * u + 0.35 * _smooth_noise(rng, n, n / 6)
    wiggle = 0.12 * _smooth_noise(rng, n, 6 * scale / SAMPLE_SPACING)
    angle = heading + bend + wiggle
    steps = SAMPLE_SPACING * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    points = np.asarray(start) + np.cumsum(steps, axis=0) - steps[0]
    # Linear taper, then a fade to nothing over the last TIP_FADE of the length: vessels that
    # stop abruptly would look like occlusions.
    fade = np.minimum(1.0, (1.0 - u) / TIP_FADE) if level >= 0 else 1.0
    tapered = root_radius * (1.0 - (1.0 - tip_fraction) * u) * fade
    relative = 1.0 + NATURAL_WIDTH_VARIATION * np.tanh(_smooth_noise(rng, n, n / 10))
    return _Vessel(points, tapered, relative, level)


def _branches(rng, parent: _Vessel, count: int, length_range, scale) -> list[_Vessel]:
    """`count` vessels leaving `parent` at 20-63 degrees, 50-80 % of its local radius."""
    out = []
    for _ in range(count):
        at = 1 + int(rng.uniform(0.12, 0.8) * (len(parent.points) - 3))  # has two neighbours
        direction = parent.points[at + 1] - parent.points[at - 1]
        side = rng.choice([-1, 1])
        heading = np.arctan2(direction[1], direction[0]) + side * rng.uniform(0.35, 1.1)
        out.append(_grow(rng, parent.points[at], heading, rng.uniform(*length_range),
                         parent.tapered[at] * rng.uniform(0.5, 0.8), rng.uniform(0.3, 0.5),
                         parent.level + 1, scale))
    return out


def _inward(rng, size: int, distance: float, spread: float) -> tuple[np.ndarray, float]:
    """A start point `distance` x size from the centre and a heading roughly towards it."""
    phi = rng.uniform(0, 2 * np.pi)
    start = size / 2 + distance * size * np.array([np.cos(phi), np.sin(phi)])
    return start, phi + np.pi + rng.uniform(-spread, spread)


def _vessel_tree(rng: np.random.Generator, size: int) -> list[_Vessel]:
    """A trunk entering from outside the frame, its branches and sub-branches, a catheter."""
    scale = size / REFERENCE_SIZE
    start, heading = _inward(rng, size, 0.62, 0.5)
    trunk = _grow(rng, start, heading, rng.uniform(0.9, 1.3) * size,
                  rng.uniform(*TRUNK_RADIUS) * scale, rng.uniform(0.35, 0.55), 0, scale)
    vessels = [trunk]
    for branch in _branches(rng, trunk, rng.integers(BRANCHES[0], BRANCHES[1] + 1),
                            (0.3 * size, 0.6 * size), scale):
        vessels.append(branch)
        vessels += _branches(rng, branch, rng.integers(SUB_BRANCHES[0], SUB_BRANCHES[1] + 1),
                             (0.12 * size, 0.3 * size), scale)
    if rng.random() < CATHETER_PROBABILITY:  # the guiding catheter: a uniform tube, a distractor
        start, heading = _inward(rng, size, 0.7, 0.4)
        catheter = _grow(rng, start, heading, 0.6 * size, 2.2 * scale, 1.0, -1, scale)
        catheter.relative[:] = 1.0
        vessels.append(catheter)
    return vessels


def _lesion_sites(trunk: _Vessel, size: int) -> np.ndarray:
    """Trunk samples where a lesion would be visible: wide enough, well inside the frame."""
    u = np.linspace(0.0, 1.0, len(trunk.points))
    margin = 0.1 * size
    inside = np.all((trunk.points > margin) & (trunk.points < size - margin), axis=1)
    wide = trunk.tapered >= LESION_MIN_RADIUS * size / REFERENCE_SIZE
    return np.flatnonzero(inside & wide & (u >= LESION_ZONE[0]) & (u <= LESION_ZONE[1]))


def _add_lesion(rng, trunk: _Vessel, sites: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Narrow the trunk by a smooth gaussian dip (the stenosis); returns its centre and depth."""
    centre = sites[rng.integers(len(sites))]
    depth = rng.uniform(*LESION_DEPTH)
    sigma = rng.uniform(*LESION_SIGMA) * size / REFERENCE_SIZE / SAMPLE_SPACING
    offset = np.arange(len(trunk.points)) - centre
    trunk.relative *= 1.0 - depth * np.exp(-0.5 * (offset / sigma) ** 2)
    return trunk.points[centre], depth


def _disc(radius: float) -> np.ndarray:
    """Anti-aliased indicator of a disc: pixel coverage ~ clip(r + 1/2 - distance, 0, 1)."""
    half = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    return np.clip(radius + 0.5 - np.hypot(xx, yy), 0.0, 1.0)


def _absorption(vessels: list[_Vessel], size: int, attenuation: float) -> np.ndarray:
    """Beer-Lambert optical depth of the contrast-filled vessels: attenuation x chord length.

    Sweeping a disc of radius r along a centreline gives, at distance x, the chord
    2 sqrt(r^2 - x^2) through a cylinder: so centreline samples (weight attenuation x spacing)
    are splatted bilinearly onto a few radius levels (log-interpolated between the two
    nearest) and each level is convolved once with its disc. Sub-pixel radii use the smallest
    disc with their weight scaled by (r / r_min)^2, which keeps the contrast mass pi r^2.
    """
    points = np.concatenate([v.points for v in vessels])
    radius = np.concatenate([v.radius for v in vessels])
    drawn = np.maximum(radius, MIN_DISC_RADIUS)
    per_pixel = attenuation * REFERENCE_SIZE / size  # attenuation is per reference pixel
    mass = per_pixel * SAMPLE_SPACING * (radius / drawn) ** 2
    levels = np.geomspace(drawn.min(), drawn.max() * 1.0001, N_RADIUS_LEVELS)
    position = np.interp(np.log(drawn), np.log(levels), np.arange(N_RADIUS_LEVELS))
    low = np.minimum(position.astype(int), N_RADIUS_LEVELS - 2)
    pad = int(np.ceil(levels[-1])) + 3
    side = size + 2 * pad
    xy = points + pad
    x0, y0 = np.floor(xy[:, 0]).astype(int), np.floor(xy[:, 1]).astype(int)
    fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
    flat, weights = [], []
    for level, level_weight in ((low, low + 1 - position), (low + 1, position - low)):
        for dx, dy, corner in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                               (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            x, y = x0 + dx, y0 + dy
            keep = (x >= 0) & (x < side) & (y >= 0) & (y < side)
            flat.append(((level * side + y) * side + x)[keep])
            weights.append((mass * level_weight * corner)[keep])
    splats = np.bincount(np.concatenate(flat), np.concatenate(weights),
                         N_RADIUS_LEVELS * side * side).reshape(N_RADIUS_LEVELS, side, side)
    depth = sum(fftconvolve(splats[k], _disc(levels[k]), mode="same")
                for k in range(N_RADIUS_LEVELS))
    return np.clip(depth[pad:-pad, pad:-pad], 0.0, None)  # FFT round-off can dip below 0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """X-ray-like backdrop: soft anatomy (smooth field + one broad edge), mottle, vignette."""
    scale = size / REFERENCE_SIZE
    field = zoom(rng.standard_normal((6, 6)), size / 6, order=3, grid_mode=True, mode="grid-mirror")
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    theta = rng.uniform(0, 2 * np.pi)
    border = (np.cos(theta) * xx + np.sin(theta) * yy - rng.uniform(-0.3, 0.3)) / 0.06
    mottle = gaussian_filter(rng.standard_normal((size, size)), 1.5 * scale)
    mottle /= mottle.std()
    vignette = 1.0 - 0.3 * (xx**2 + yy**2) / 0.5
    return vignette * (rng.uniform(0.55, 0.7) + rng.uniform(0.03, 0.07) * field
                       + rng.uniform(-0.12, 0.12) / (1.0 + np.exp(-border))
                       + rng.uniform(0.015, 0.035) * mottle)


def image_seed(seed: int, split: str, stenosis: bool, index: int) -> np.random.SeedSequence:
    """The seed of one image: independent of every other image and of generation order."""
    return np.random.SeedSequence([seed, SPLITS.index(split), int(stenosis), index])


def generate_image(
    seed: int, split: str, index: int, *, stenosis: bool, size: int = 224
) -> DemoImage:
    """Draw image `index` of `split` for the given class; pure function of its arguments."""
    rng = np.random.default_rng(image_seed(seed, split, stenosis, index))
    # Both classes redraw trees whose trunk has no visible lesion site, so their trees match.
    vessels = _vessel_tree(rng, size)
    while not len(sites := _lesion_sites(vessels[0], size)):
        vessels = _vessel_tree(rng, size)
    lesion_xy, lesion_depth = (_add_lesion(rng, vessels[0], sites, size) if stenosis
                               else (None, None))
    optical_depth = _absorption(vessels, size, attenuation=rng.uniform(0.05, 0.08))
    intensity = _background(rng, size) * np.exp(-optical_depth)
    photons = rng.uniform(*PHOTONS)
    noisy = rng.poisson(np.clip(intensity, 0, None) * photons) / photons
    blurred = gaussian_filter(noisy, 0.6 * size / REFERENCE_SIZE)
    pixels = np.round(np.clip(blurred, 0.0, 1.0) * 255).astype(np.uint8)
    min_relative = min(float(v.relative.min()) for v in vessels if v.level >= 0)
    xy = None if lesion_xy is None else (float(lesion_xy[0]), float(lesion_xy[1]))
    return DemoImage(pixels, stenosis, min_relative, xy, lesion_depth)


def _check_options(out_dir: Path, size: int, counts: Mapping[str, tuple[int, int]],
                   seed: int) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir}: output folder must not exist or be empty")
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} pixels; got {size}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed}")
    if set(counts) != set(SPLITS):
        raise ValueError(f"counts must name the splits {', '.join(SPLITS)}; "
                         f"got {', '.join(counts)}")
    for split, pair in counts.items():
        if len(pair) != len(CLASSES) or min(pair) < 1:
            raise ValueError(f"{split} counts must be two positive integers (normal stenosis); "
                             f"got {pair}")


def _layout(counts: Mapping[str, tuple[int, int]],
            suffix: str = ".png") -> list[tuple[str, str, int, str]]:
    """(split, class, index, path relative to OUT) of every image, in writing order."""
    layout = []
    for split in SPLITS:
        for label, count in zip(CLASSES, counts[split], strict=True):
            width = max(4, len(str(count - 1)))
            layout += [(split, label, i, f"{split}/{label}/{split}_{label}_{i:0{width}d}{suffix}")
                       for i in range(count)]
    return layout


def patient_id(split: str, label: str, index: int) -> str:
    """The DICOM PatientID of an image: `IMAGES_PER_PATIENT` consecutive images of one split
    and class belong to one patient."""
    return f"DEMO-{split}-{label}-{index // IMAGES_PER_PATIENT:04d}"


def _write_dicom(image: DemoImage, path: Path, seed: int, split: str, label: str,
                 index: int) -> None:
    """Write `image` as a 12-bit single-frame XA-like DICOM file (explicit VR little endian)."""
    try:
        import pydicom
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError as err:
        raise ImportError("--format dicom writes DICOM with pydicom: pip install "
                          "'diffaug[dicom]'") from err

    patient = patient_id(split, label, index)

    def uid(*parts: object) -> str:  # deterministic: same seed and image, same UID
        return generate_uid(entropy_srcs=["make_demo_data", str(seed), *map(str, parts)])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = XA_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uid(split, label, index)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = XA_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(patient, "study"), uid(patient, "series")
    ds.Modality, ds.ImageType = "XA", ["ORIGINAL", "PRIMARY"]
    ds.PatientID, ds.PatientName = patient, patient
    ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
    ds.Rows, ds.Columns = image.pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, DICOM_BITS_STORED, DICOM_BITS_STORED - 1
    ds.PixelRepresentation = 0
    top = 2**DICOM_BITS_STORED - 1
    ds.WindowCenter, ds.WindowWidth = (top + 1) // 2, top + 1
    stored = (image.pixels.astype(np.uint32) * top + 127) // 255  # 0-255 -> 0-4095, rounded
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def _save(image: DemoImage, path: Path, image_format: str = "png", *, seed: int = 0,
          split: str = "", label: str = "", index: int = 0) -> dict:
    """Write `image` as an 8-bit PNG (or DICOM); return its ground truth and sha256 for
    demo-data.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image_format == "dicom":
        _write_dicom(image, path, seed, split, label, index)
    else:
        Image.fromarray(image.pixels).save(path, format="PNG")
    return {
        "min_relative_radius": round(image.min_relative_radius, 6),
        "lesion_xy": None if image.lesion_xy is None else [round(c, 3) for c in image.lesion_xy],
        "lesion_depth": None if image.lesion_depth is None else round(image.lesion_depth, 6),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def make_demo_dataset(
    out_dir: str | os.PathLike,
    *,
    size: int = 224,
    counts: Mapping[str, tuple[int, int]] = DEFAULT_COUNTS,
    seed: int = 0,
    on_image: Callable[[int, int], None] | None = None,
    image_format: str = "png",
) -> dict:
    """Write the demo dataset to `out_dir` (must not exist or be empty); return its record.

    Everything is written to a temporary sibling folder that is renamed into place at the end,
    so `out_dir` is either complete or untouched. `on_image(done, total)` is called after
    each image. `image_format` "dicom" writes XA-like DICOM files (see the module docstring);
    the record's options then name the format (a PNG record is unchanged).
    """
    out_dir = Path(out_dir)
    _check_options(out_dir, size, counts, seed)
    if image_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {image_format!r}")
    layout = _layout(counts, SUFFIXES[image_format])
    libraries = ("numpy", "scipy", "pillow") + (("pydicom",) if image_format == "dicom" else ())
    record = {
        "generator": "tools/demo/make_demo_data.py",
        "options": {"size": size, "seed": seed,
                    "counts": {s: dict(zip(CLASSES, counts[s], strict=True)) for s in SPLITS},
                    **({} if image_format == "png" else {"format": image_format})},
        "versions": {name: version(name) for name in libraries},
        "positive_class": "stenosis",
        "images": [],
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for done, (split, label, index, relative) in enumerate(layout, start=1):
            image = generate_image(seed, split, index, stenosis=label == "stenosis", size=size)
            saved = _save(image, staging / relative, image_format, seed=seed, split=split,
                          label=label, index=index)
            record["images"].append({"path": relative, "split": split, "class": label,
                                     "index": index, **saved})
            if on_image is not None:
                on_image(done, len(layout))
        (staging / METADATA_FILE).write_text(json.dumps(record, indent=1) + "\n",
                                             encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default=224, show_default=True, help="Image side in pixels.")
@click.option("--train", "train", nargs=2, type=int, default=DEFAULT_COUNTS["train"],
              show_default=True, help="Normal and stenosis counts in train.")
@click.option("--val", "val", nargs=2, type=int, default=DEFAULT_COUNTS["val"],
              show_default=True, help="Normal and stenosis counts in val.")
@click.option("--test", "test", nargs=2, type=int, default=DEFAULT_COUNTS["test"],
              show_default=True, help="Normal and stenosis counts in test.")
@click.option("--seed", default=0, show_default=True, help="Base seed of every image.")
@click.option("--format", "image_format", type=click.Choice(FORMATS), default="png",
              show_default=True,
              help="png: 8-bit PNG; dicom: 12-bit XA-like DICOM with several images per "
                   "PatientID (needs pydicom).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(out: Path, size: int, train, val, test, seed: int, image_format: str,
         quiet: bool) -> None:
    """Write an angiography-like normal/stenosis demo dataset to OUT (train/val/test folders)."""
    counts = {"train": tuple(train), "val": tuple(val), "test": tuple(test)}
    total = sum(sum(pair) for pair in counts.values())
    with click.progressbar(length=total, label="images", hidden=quiet) as bar:
        try:
            make_demo_dataset(out, size=size, counts=counts, seed=seed,
                              on_image=lambda done, total: bar.update(1),
                              image_format=image_format)
        except (ValueError, OSError, ImportError) as err:
            raise click.ClickException(str(err)) from err
    summary = "; ".join(f"{s}: normal {counts[s][0]}, stenosis {counts[s][1]}" for s in SPLITS)
    click.echo(f"wrote {total} images to {out} ({summary})")


if __name__ == "__main__":
    main()
