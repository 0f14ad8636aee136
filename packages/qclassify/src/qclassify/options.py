"""Every option of a training run (`TrainConfig`), its bounds and choices, without importing
torch: the command line builds its help and checks its options from here, so ``qclassify
--help`` starts at once."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["AUTO_STEM", "BACKENDS", "DEFAULT_Q_DEVICE", "FRAME_CHOICES", "INTERRUPTED_EXIT_CODE",
           "INTERRUPTED_MESSAGE", "LR_SCHEDULES", "MAX_IMAGE_SIZE", "MAX_QLAYERS", "MAX_QUBITS",
           "MAX_SEEDS", "MIN_IMAGE_SIZE", "MODEL_NAMES", "MONITORS", "OPTIMIZERS", "OptionError",
           "PLACEMENT_OPTIONS", "RECIPES", "RECIPE_CHOICES", "RECIPE_FIELDS", "STEMS",
           "THRESHOLD_RULES", "TrainConfig", "check_image_size", "check_window", "parse_seeds"]

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
OPTIMIZERS = ("adam", "adamw")  # torch.optim.Adam (L2 in the gradient), AdamW (decoupled decay)
# The validation metric that picks the best epoch and drives early stopping.
MONITORS = ("val_loss", "val_auc")
# The first downsampling of a backbone: "lowres" removes it (stride 1, as the CIFAR variants
# of these networks do), so small images keep twice the resolution through the network; see
# `qclassify.models.ARCHITECTURES` for what each model changes. "auto" is `AUTO_STEM`.
STEMS = ("auto", "standard", "lowres")
AUTO_STEM = "standard"
# Weights of the training cross-entropy per class: "balanced" is scikit-learn's
# class_weight="balanced", n_images / (n_classes * images of the class), so every class weighs
# as much in the loss and argmax decides as if the classes were equally frequent.
CLASS_WEIGHTS = ("none", "balanced")

# Training recipes: the values of `RECIPE_FIELDS` that a `TrainConfig` leaves unset (None).
# "paper" is section 2.5's fine-tuning recipe; "scratch" trains a randomly initialised network,
# chosen on BreastMNIST's validation split (README "Results", BENCHMARKS.md "Recipe"): AdamW with
# warmup and cosine, selection by validation AUC, and augmentation, which only pays off over
# the longer 40-epoch budget (at 15 epochs it lowered validation AUC). "auto" picks paper for
# pretrained weights (imagenet or a file) and scratch for --weights none.
RECIPES: dict[str, dict[str, object]] = {
    "paper": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 1e-4, "warmup_epochs": 0,
              "lr_schedule": "constant", "epochs": 30, "batch_size": 16,
              "monitor": "val_loss", "patience": 5, "label_smoothing": 0.0,
              "class_weight": "none", "stem": "standard", "augment": False,
              "threshold": "argmax"},
    "scratch": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "warmup_epochs": 3,
                "lr_schedule": "cosine", "epochs": 40, "batch_size": 32,
                "monitor": "val_auc", "patience": 15, "label_smoothing": 0.0,
                "class_weight": "none", "stem": "auto", "augment": True,
                "threshold": "argmax"},
}
RECIPE_CHOICES = ("auto", *RECIPES)
RECIPE_FIELDS = tuple(RECIPES["paper"])
# DICOM/NIfTI multi-frame files: the middle frame, or every frame as a sample (diffaug.medical's
# FRAME_CHOICES; a test keeps the two in step).
FRAME_CHOICES = ("middle", "all")
# Upper bounds that keep a model buildable in memory, checked before any tensor is allocated
# (a crafted checkpoint or option must give an error, not an allocator failure): n qubits need
# Linear(1280, 2^n), 335 MB of weights at n = 16; the paper uses n = 8 and L = 2.
MAX_QUBITS = 16
MAX_QLAYERS = 100
# 3 x 4096^2 float32 inputs are 200 MB per image; the paper uses 224.
MAX_IMAGE_SIZE = 4096


@dataclass
class TrainConfig:
    """Every option of ``qclassify fit``.

    The options of `RECIPE_FIELDS` default to None: "take it from the recipe". `resolved()`
    fills them from `RECIPES[recipe]` (``recipe="auto"``: paper with pretrained weights,
    scratch with ``weights="none"``), so ``TrainConfig(recipe="scratch", lr=3e-4)`` is the
    scratch recipe with another learning rate, and ``TrainConfig()`` is the paper's recipe
    (section 2.5). Training uses, and config.json records, the resolved options.
    """

    model: str = "qmobilenet"
    qubits: int = 4
    qlayers: int = 2
    q_backend: str = "torch"
    q_device: str = DEFAULT_Q_DEVICE  # the PennyLane device of q_backend="pennylane"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    patience: int | None = None
    image_size: int = 224
    weights: str = "imagenet"
    seed: int = 0
    augment: bool | None = None  # random flips and small affine maps of training images
    threshold: str | None = None  # "argmax" or "youden": a decision threshold tuned on validation
    lr_schedule: str | None = None  # "constant" or "cosine": annealed to 0 over --epochs
    device: str = "auto"
    num_workers: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    recipe: str = "auto"
    optimizer: str | None = None
    warmup_epochs: int | None = None  # linear warmup epochs before the lr schedule
    monitor: str | None = None
    label_smoothing: float | None = None  # of the training cross-entropy
    class_weight: str | None = None  # "none" or "balanced": class weights of that loss
    stem: str | None = None
    frames: str = "middle"  # or "all": every frame of a multi-frame DICOM/NIfTI file
    window: tuple[float, float] | None = None  # (center, width) replacing DICOM files' window
    # Patient groups (`qclassify.groups`): a path,group CSV file, or a DICOM attribute keyword.
    groups: str | None = None
    group_by: str | None = None

    def recipe_name(self) -> str:
        """The recipe `resolved` applies: `recipe`, with "auto" decided by `weights`."""
        if self.recipe not in RECIPE_CHOICES:
            raise OptionError(f"must be one of {', '.join(RECIPE_CHOICES)}; got {self.recipe!r}",
                              "recipe")
        if self.recipe != "auto":
            return self.recipe
        return "scratch" if str(self.weights) == "none" else "paper"

    def resolved(self) -> TrainConfig:
        """This config with every unset recipe option taken from its recipe, `recipe` set to
        the recipe's name and a ``stem`` of "auto" made concrete; resolving again changes
        nothing."""
        name = self.recipe_name()
        unset = {field: value for field, value in RECIPES[name].items()
                 if getattr(self, field) is None}
        config = replace(self, recipe=name, **unset)
        return replace(config, stem=AUTO_STEM) if config.stem == "auto" else config

    def recipe_summary(self) -> str:
        """One line naming the recipe, why it was chosen and every resolved recipe value
        ("recipe scratch (from --weights none): adamw lr 0.001 wd 0.05, warmup 3 + cosine,
        ...")."""
        config = self.resolved()
        reason = f"--recipe {self.recipe}" if self.recipe != "auto" else f"from --weights {self.weights}"
        given = [field for field in RECIPE_FIELDS if getattr(self, field) is not None]
        schedule = (f"warmup {config.warmup_epochs} + {config.lr_schedule}"
                    if config.warmup_epochs else config.lr_schedule)
        stop_on = "val AUC" if config.monitor == "val_auc" else "val loss"
        return (f"recipe {config.recipe} ({reason}): {config.optimizer} lr {config.lr:g} "
                f"wd {config.weight_decay:g}, {schedule}, {config.epochs} epochs, "
                f"batch {config.batch_size}, early stop on {stop_on}, patience "
                f"{config.patience}, label smoothing {config.label_smoothing:g}, class weight "
                f"{config.class_weight}, stem "
                f"{config.stem}, {'augment' if config.augment else 'no augment'}, threshold "
                f"{config.threshold}"
                + (f"; set explicitly: {', '.join(given)}" if given else ""))

    def validate(self) -> None:
        """Raise OptionError naming the first option with an impossible value (the recipe
        applied first: see `resolved`)."""
        self.resolved()._validate_resolved()

    def _validate_resolved(self) -> None:
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
        if self.frames not in FRAME_CHOICES:
            raise OptionError(f"must be one of {', '.join(FRAME_CHOICES)}; got {self.frames!r}",
                              "frames")
        check_window(self.window)
        if not self.q_device:
            raise OptionError("must name a PennyLane device, e.g. default.qubit", "q_device")
        for name, choices in (("optimizer", OPTIMIZERS), ("monitor", MONITORS),
                              ("stem", STEMS), ("class_weight", CLASS_WEIGHTS)):
            if getattr(self, name) not in choices:
                raise OptionError(f"must be one of {', '.join(choices)}; "
                                  f"got {getattr(self, name)!r}", name)
        if not (isinstance(self.warmup_epochs, int) and self.warmup_epochs >= 0):
            raise OptionError(f"must be a whole number, 0 or more; got {self.warmup_epochs!r}",
                              "warmup_epochs")
        if not 0 <= self.label_smoothing < 1:
            raise OptionError(f"must be in [0, 1); got {self.label_smoothing!r}",
                              "label_smoothing")
        check_image_size(self.image_size)


def check_window(window: tuple[float, float] | None) -> None:
    """Raise OptionError unless `window` is None or (center, width) with a positive width."""
    if window is not None and not (len(window) == 2 and window[1] > 0):
        raise OptionError(f"must be CENTER,WIDTH with a positive width; got {window}", "window")


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
