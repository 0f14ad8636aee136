"""Every option of a training run (`TrainConfig`), its bounds and choices, without importing
torch: the command line builds its help and checks its options from here, so ``qclassify
--help`` starts at once."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BACKENDS", "DEFAULT_Q_DEVICE", "INTERRUPTED_EXIT_CODE", "INTERRUPTED_MESSAGE", "LR_SCHEDULES", "MAX_IMAGE_SIZE", "MAX_QLAYERS",
           "MAX_QUBITS", "MAX_SEEDS", "MIN_IMAGE_SIZE", "MODEL_NAMES", "OptionError",
           "PLACEMENT_OPTIONS", "THRESHOLD_RULES", "TrainConfig", "check_image_size", "parse_seeds"]

# The models of `qclassify.models.ARCHITECTURES` (a test keeps the two in step).
MODEL_NAMES = ("qmobilenet", "mobilenet_v2", "resnet18", "densenet121", "vgg16")
# Circuit simulations of `qclassify.quantum.QuantumFeatureLayer`.
BACKENDS = ("torch", "pennylane")
# Every backbone downsamples by 32; VGG16 and DenseNet121 fail on smaller inputs, and below it
# the others would classify a single zero-padded pixel.
MIN_IMAGE_SIZE = 32


# The shell's status of a process ended by SIGINT (128 + 2), for Ctrl-C during start-up
# (`qclassify.__main__`) and in a command (`qclassify.cli`).
INTERRUPTED_EXIT_CODE = 130
INTERRUPTED_MESSAGE = "Interrupted."


class OptionError(ValueError):
    """An option or input the user must change (a usage error: the CLIs exit with status 2),
    as opposed to a failure while running.

    With `parameter`, the message is "<parameter> <text>" and names the library's parameter
    (``batch_size``); `for_flag` gives the command line's wording (``--batch-size``).
    """

    def __init__(self, text: str, parameter: str | None = None) -> None:
        self.text, self.parameter = text, parameter
        super().__init__(text if parameter is None else f"{parameter} {text}")

    def for_flag(self) -> str:
        """The message naming the command-line flag instead of the parameter."""
        if self.parameter is None:
            return str(self)
        return f"--{self.parameter.replace('_', '-')} {self.text}"


# Options that decide where a run is computed, not what it computes: a finished run is reused
# whatever they were.
PLACEMENT_OPTIONS = ("device", "num_workers")
DEFAULT_Q_DEVICE = "default.qubit"
# How a model turns probabilities into a class: argmax, or (two classes) the validation split's
# Youden-optimal threshold on the positive-class probability.
THRESHOLD_RULES = ("argmax", "youden")
LR_SCHEDULES = ("constant", "cosine")
# Upper bounds that keep a model buildable in memory, checked before any tensor is allocated
# (a crafted checkpoint or option must give an error, not an allocator failure): n qubits need
# Linear(1280, 2^n), 335 MB of weights at n = 16; the paper uses n = 8 and L = 2.
MAX_QUBITS = 16
MAX_QLAYERS = 100
# 3 x 4096^2 float32 inputs are 200 MB per image; the paper uses 224.
MAX_IMAGE_SIZE = 4096


@dataclass
class TrainConfig:
    """Every option of ``qclassify fit``; the defaults are the paper's recipe (section 2.5)."""

    model: str = "qmobilenet"
    qubits: int = 4
    qlayers: int = 2
    q_backend: str = "torch"
    q_device: str = DEFAULT_Q_DEVICE  # the PennyLane device of q_backend="pennylane"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    patience: int = 5
    image_size: int = 224
    weights: str = "imagenet"
    seed: int = 0
    augment: bool = False  # random flips and small affine maps of training images
    threshold: str = "argmax"  # or "youden": a decision threshold tuned on validation
    lr_schedule: str = "constant"  # or "cosine": annealed to 0 over --epochs
    device: str = "auto"
    num_workers: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def validate(self) -> None:
        """Raise OptionError naming the first option with an impossible value."""
        if self.model not in MODEL_NAMES:
            raise OptionError(f"{self.model!r} is unknown; choose one of {', '.join(MODEL_NAMES)}",
                              "model")
        for name in ("qubits", "qlayers", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise OptionError("must be at least 1", name)
        for name, most in (("qubits", MAX_QUBITS), ("qlayers", MAX_QLAYERS),
                           ("image_size", MAX_IMAGE_SIZE)):
            if getattr(self, name) > most:
                raise OptionError(f"must be at most {most}", name)
        if self.q_backend not in BACKENDS:
            raise OptionError(f"must be one of {', '.join(BACKENDS)}; got {self.q_backend!r}",
                              "q_backend")
        if self.num_workers < 0:
            raise OptionError("must be 0 or more", "num_workers")
        if not self.lr > 0:
            raise OptionError("must be positive", "lr")
        if not self.weight_decay >= 0:
            raise OptionError("must be 0 or more", "weight_decay")
        if self.threshold not in THRESHOLD_RULES:
            raise OptionError(f"must be one of {', '.join(THRESHOLD_RULES)}; "
                              f"got {self.threshold!r}", "threshold")
        if self.lr_schedule not in LR_SCHEDULES:
            raise OptionError(f"must be one of {', '.join(LR_SCHEDULES)}; "
                              f"got {self.lr_schedule!r}", "lr_schedule")
        if not self.q_device:
            raise OptionError("must name a PennyLane device, e.g. default.qubit", "q_device")
        check_image_size(self.image_size)


def check_image_size(image_size: int) -> None:
    """Raise OptionError when `image_size` is below what the backbones accept."""
    if image_size < MIN_IMAGE_SIZE:
        raise OptionError(f"{image_size} is too small: the backbones downsample by 32; use "
                          f"{MIN_IMAGE_SIZE} or more", "image_size")


# A seed ensemble trains one model per seed; more members than this is a typing slip ("0-1000")
# that would train for weeks, and a range is measured before it is expanded.
MAX_SEEDS = 100


def parse_seeds(spec: str) -> list[int]:
    """The seeds of ``--seeds``: comma-separated non-negative integers or ranges ``A-B``
    (inclusive), e.g. ``"0-4"``, ``"0,2,5"``, ``"3"``; sorted, duplicates dropped.

    Raises:
        OptionError: an empty or malformed item, a descending range, or more than `MAX_SEEDS`.
    """
    seeds: set[int] = set()
    for item in (part.strip() for part in str(spec).split(",")):
        low, dash, high = item.partition("-")
        if not (low.strip().isdecimal() and (not dash or high.strip().isdecimal())):
            raise OptionError(f"{spec!r}: {item!r} is not a seed or range; use e.g. 0-4, "
                              "0,2,5 or 3 (non-negative integers)", "seeds")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise OptionError(f"{spec!r}: the range {item!r} descends; write {last}-{first}",
                              "seeds")
        if last - first + 1 + len(seeds) > MAX_SEEDS:
            raise OptionError(f"{spec!r} names more than {MAX_SEEDS} seeds", "seeds")
        seeds.update(range(first, last + 1))
    return sorted(seeds)
