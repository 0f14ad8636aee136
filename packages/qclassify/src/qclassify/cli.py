"""``qclassify`` command line: a thin shell over `train.fit` (`ensemble.fit_seeds` with
``--seeds``), `ensemble_run.evaluate_any`, `ensemble_run.predict_any`, `export.export_run` and
`compare.compare`.

Shared options are decorators (`seed_option`, `device_option`, `training_options`, ...) so
other commands reuse them; the values of `training_options` are the fields of `TrainConfig`.
Choices and bounds come from the torch-free `qclassify.options`; the library (torch, PennyLane,
scikit-learn) is imported by the command that runs, so ``--help`` and ``--version`` are instant.
Exit status: 0 done, 1 a failure while running, 2 a usage error (an option or input to change),
130 interrupted.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource
from PIL import Image

from qclassify.options import (
    BACKENDS,
    CLASS_WEIGHTS,
    FRAME_CHOICES,
    INTERRUPTED_EXIT_CODE,
    INTERRUPTED_MESSAGE,
    LR_SCHEDULES,
    MAX_IMAGE_SIZE,
    MAX_QLAYERS,
    MAX_QUBITS,
    MIN_IMAGE_SIZE,
    MODEL_NAMES,
    MONITORS,
    OPTIMIZERS,
    RECIPE_CHOICES,
    RECIPE_FIELDS,
    RECIPES,
    STEMS,
    THRESHOLD_RULES,
    OptionError,
    TrainConfig,
    check_window,
    parse_seeds,
)
from qclassify.runfolder import METRICS_FILE, MODEL_FILE, check_separate
from qclassify.runtime import ENGINES, EXPORT_FORMATS

if TYPE_CHECKING:
    from qclassify.distributed import Ranks
    from qclassify.train import EpochRecord

__all__ = [
    "DeviceType",
    "SeedsType",
    "bootstrap_option",
    "device_option",
    "json_option",
    "main",
    "positive_option",
    "quiet_option",
    "seed_option",
    "seeds_option",
    "training_options",
]

F = TypeVar("F", bound=Callable[..., Any])
_DEFAULTS = TrainConfig()


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked against the GPUs of this machine."""

    name = "auto|cpu|cuda|cuda:N"
    _FORM = re.compile(r"auto|cpu|cuda(:\d+)?")

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        value = str(value)
        if not self._FORM.fullmatch(value):
            self.fail(f"{value!r} is not auto, cpu, cuda or cuda:N", param, ctx)
        from qclassify.devices import resolve_device  # imports torch: only for a command that runs

        try:
            resolve_device(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)
        return value


class SeedsType(click.ParamType):
    """``--seeds``: ``0-4``, ``0,2,5`` or ``3`` -> a sorted list of unique seeds."""

    name = "SEEDS"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            return parse_seeds(value)
        except OptionError as err:
            self.fail(err.text, param, ctx)


seeds_option = click.option(
    "--seeds", type=SeedsType(), default=None,
    help="Train a seed ensemble: one member per seed (e.g. 0-4, 0,2,5), sharing the split of "
         "the first seed; evaluate/predict use the mean probability. Excludes --seed.",
)


def _check_one_seed_option(seeds: list[int] | None) -> None:
    """--seed and --seeds both typed: a usage error (exit 2), not a silent choice."""
    ctx = click.get_current_context()
    typed = ctx.get_parameter_source("seed") in (click.core.ParameterSource.COMMANDLINE,
                                                  click.core.ParameterSource.ENVIRONMENT)
    if seeds is not None and typed:
        raise click.UsageError("--seed and --seeds are mutually exclusive: give one seed with "
                               "--seed or an ensemble's seeds with --seeds")
    if seeds is not None:
        from qclassify.distributed import under_torchrun

        if under_torchrun():  # every rank would write the members' folders
            raise click.UsageError("--seeds is not supported under torchrun: run one torchrun "
                                   "per seed with --seed, or --seeds in a single process")


seed_option = click.option(
    "--seed", type=click.IntRange(min=0), default=_DEFAULTS.seed, show_default=True,
    help="Seed of every random choice (split, initialisation, batch order, bootstrap).",
)
device_option = click.option(
    "--device", type=DeviceType(), default="auto", show_default=True,
    help="auto = cuda when available, else cpu; cuda:N picks one GPU.",
)
quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the results as JSON (for scripts) instead of a table.")
bootstrap_option = click.option(
    "--bootstrap", "n_bootstrap", type=click.IntRange(min=0), default=500, show_default=True,
    help="Bootstrap resamples for the 95% confidence intervals.",
)
positive_option = click.option(
    "--positive", default=None,
    help="Positive class of a two-class task [default: the training minority class].",
)


def _check_weights(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value in ("imagenet", "none") or Path(value).is_file():
        return value
    raise click.BadParameter(f"{value!r} is not 'imagenet', 'none' or an existing file")


_OPEN_UNIT_INTERVAL = click.FloatRange(0, 1, min_open=True, max_open=True)


def _from_recipe(field: str) -> str:
    """The help's default of a recipe option: its value in each recipe."""
    return ", ".join(f"{name} {_shown(values[field])}" for name, values in RECIPES.items())


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return value if isinstance(value, str) else f"{value:g}"


def recipe_option(name: str, **kwargs: Any) -> Callable[[F], F]:
    """A click option of `RECIPE_FIELDS`: unset (None) unless given, so that the recipe
    decides; its help shows each recipe's value."""
    return click.option(name, default=None, show_default=_from_recipe(
        name.split("/")[0].lstrip("-").replace("-", "_")), **kwargs)


def _train_config(ctx: click.Context, options: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a command's training options: a recipe option counts only when the
    user gave it, so the precedence is TrainConfig defaults < recipe < explicit flags."""
    given = {name: value for name, value in options.items()
             if name not in RECIPE_FIELDS
             or ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    return TrainConfig(**given)


def _parse_window(ctx: click.Context, param: click.Parameter,
                  value: str | None) -> tuple[float, float] | None:
    """``--window C,W`` as (center, width)."""
    if value is None:
        return None
    try:
        center, width = (float(part) for part in value.split(","))
        check_window((center, width))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not CENTER,WIDTH with a positive width, "
                                 "e.g. 40,400 (a CT soft-tissue window)") from None
    return center, width


def _reading_options(*, recorded: bool) -> Callable[[F], F]:
    """``--frames`` and ``--window``: how DICOM/NIfTI files are read. `recorded`: default to
    what the run's config.json records (evaluate, predict) instead of the fit defaults."""
    hint = " [default: as the run was trained]" if recorded else ""
    return _compose(
        click.option("--frames", type=click.Choice(FRAME_CHOICES),
                     default=None if recorded else _DEFAULTS.frames, show_default=not recorded,
                     help="Multi-frame DICOM files and NIfTI volumes: the middle frame, or "
                          f"every frame as a sample (a file's frames share a split).{hint}"),
        click.option("--window", callback=_parse_window, default=None, metavar="C,W",
                     help="DICOM/NIfTI window center,width instead of the file's first window "
                          f"[default: the file's].{hint}"),
    )

training_options = _compose(
    click.option("--qubits", type=click.IntRange(min=1, max=MAX_QUBITS),
                 default=_DEFAULTS.qubits, show_default=True,
                 help="Qubits n of the quantum layer (reduction to 2^n)."),
    click.option("--qlayers", type=click.IntRange(min=1, max=MAX_QLAYERS),
                 default=_DEFAULTS.qlayers, show_default=True,
                 help="RY + CNOT layers of the quantum circuit."),
    click.option("--q-backend", type=click.Choice(BACKENDS), default=_DEFAULTS.q_backend,
                 show_default=True, help="Circuit simulation: exact PyTorch or PennyLane."),
    click.option("--q-device", default=_DEFAULTS.q_device, show_default=True,
                 help="PennyLane device of --q-backend pennylane, e.g. lightning.qubit "
                      "(pip install pennylane-lightning); ignored by the torch backend."),
    click.option("--recipe", type=click.Choice(RECIPE_CHOICES), default=_DEFAULTS.recipe,
                 show_default=True,
                 help="Default values of the options marked 'paper ..., scratch ...': paper = "
                      "the paper's fine-tuning recipe, scratch = for random initialisation; "
                      "auto = paper with pretrained --weights, scratch with --weights none. "
                      "Options given explicitly override the recipe."),
    recipe_option("--epochs", type=click.IntRange(min=1)),
    recipe_option("--batch-size", type=click.IntRange(min=1)),
    recipe_option("--optimizer", type=click.Choice(OPTIMIZERS),
                  help="adam (weight decay as L2, eq. 15) or adamw (decoupled weight decay)."),
    recipe_option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate."),
    recipe_option("--weight-decay", type=click.FloatRange(min=0),
                  help="Weight decay (Adam: the L2 term of eq. 15)."),
    recipe_option("--warmup-epochs", type=click.IntRange(min=0),
                  help="Epochs of linear warmup to --lr (epoch e at lr*e/(N+1)) before "
                       "--lr-schedule."),
    recipe_option("--lr-schedule", type=click.Choice(LR_SCHEDULES),
                  help="constant, or cosine: annealed from --lr to 0 over the epochs after "
                       "warmup."),
    recipe_option("--monitor", type=click.Choice(MONITORS),
                  help="Validation metric that picks the best epoch and drives early "
                       "stopping (val_auc: ties broken by the lower loss)."),
    recipe_option("--patience", type=click.IntRange(min=1),
                  help="Stop after this many epochs without a better --monitor value."),
    recipe_option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True),
                  help="Label smoothing of the training cross-entropy."),
    recipe_option("--class-weight", type=click.Choice(CLASS_WEIGHTS),
                  help="Class weights of the training cross-entropy: none, or balanced "
                       "(scikit-learn's: n_images / (n_classes x images of the class))."),
    recipe_option("--stem", type=click.Choice(STEMS),
                  help="lowres: no downsampling in the first convolution or pool (for small "
                       "images, as the networks' CIFAR variants); auto = standard for now."),
    click.option("--image-size", type=click.IntRange(min=MIN_IMAGE_SIZE, max=MAX_IMAGE_SIZE),
                 default=_DEFAULTS.image_size, show_default=True,
                 help="Images are resized to this square size."),
    click.option("--weights", default=_DEFAULTS.weights, show_default=True,
                 callback=_check_weights,
                 help="imagenet (torchvision, downloaded once), none (from scratch), or the "
                      "PATH of a state dict of the WHOLE model (same --model and classes, "
                      "e.g. an earlier run's model.pt); a backbone-only state dict is refused."),
    recipe_option("--augment/--no-augment",
                 help="Randomly flip (left-right), rotate (±10°), shift (5 %) and scale "
                      "(0.9-1.1) each training image every epoch, seeded by --seed."),
    recipe_option("--threshold", type=click.Choice(THRESHOLD_RULES),
                 help="How two-class predictions are made: argmax, or youden = predict the "
                      "positive class when its probability reaches the threshold that "
                      "maximises sensitivity + specificity on the validation split."),
    seed_option,
    device_option,
    click.option("--num-workers", type=click.IntRange(min=0), default=_DEFAULTS.num_workers,
                 show_default=True, help="DataLoader worker processes."),
    click.option("--val-fraction", type=_OPEN_UNIT_INTERVAL, default=_DEFAULTS.val_fraction,
                 show_default=True, help="Validation share of a class-folder dataset."),
    click.option("--test-fraction", type=_OPEN_UNIT_INTERVAL, default=_DEFAULTS.test_fraction,
                 show_default=True, help="Test share of a class-folder dataset."),
    _reading_options(recorded=False),
    click.option("--groups", type=click.Path(exists=True, dir_okay=False, resolve_path=True),
                 default=None,
                 help="CSV file with columns path,group (paths relative to DATA, as in "
                      "split.csv): each group (patient) goes to one split only."),
    click.option("--group-by", metavar="KEYWORD", default=None,
                 help="Group images by a DICOM attribute, e.g. PatientID (needs "
                      "qclassify[dicom]); instead of --groups."),
)


class InputError(click.ClickException):
    """An option or input to change (`qclassify.options.OptionError`): one ``Error:`` line,
    exit status 2, as click's own usage errors and ``diffaug``'s."""

    exit_code = 2


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Library errors become one ``Error: ...`` line, never a traceback: exit status 2 for an
    option or input to change, 1 for a failure while running."""
    try:
        yield
    except OptionError as err:  # the library names its parameter; the user typed a flag
        raise InputError(" ".join(err.for_flag().split())) from err
    # ImportError: an optional extra (e.g. qclassify[pennylane]) missing, with its install hint.
    except (ValueError, OSError, RuntimeError, ImportError) as err:
        raise click.ClickException(" ".join(str(err).split())) from err


@contextlib.contextmanager
def _torchrun_processes(device: str) -> Iterator[Ranks]:
    """Under torchrun, the process group of the command (`qclassify.distributed`): only rank 0
    prints results and warnings, and of the ranks that fail only the first prints its error
    line (the others failed because of it, or with the same error). Elsewhere nothing changes."""
    from qclassify.distributed import torchrun_group  # imports torch: only for a command that runs

    with contextlib.ExitStack() as stack:
        with _one_line_errors():
            ranks = stack.enter_context(torchrun_group(device))
        if not ranks.is_main:
            stack.enter_context(contextlib.redirect_stdout(
                stack.enter_context(open(os.devnull, "w"))))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        try:
            yield ranks
        except click.ClickException as err:
            if ranks.first_to_fail():
                raise
            raise click.exceptions.Exit(err.exit_code) from None


def _check_out(out: Path, *data_dirs: Path | None) -> None:
    """--out inside a data folder (or containing one) is a usage error, exit status 2, as
    `diffaug balance` refuses OUT inside IN; the library checks it again for its own callers."""
    for data_dir in data_dirs:
        if data_dir is not None:
            try:
                check_separate(out, data_dir)
            except ValueError as err:
                raise click.UsageError(str(err)) from None


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Each warning (e.g. a skipped unreadable image) as one ``warning: ...`` line on stderr."""
    with warnings.catch_warnings():
        # PIL's names no file; qclassify.images.read_image warns about the same image by name.
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        warnings.showwarning = lambda message, *args, **kwargs: click.echo(
            f"warning: {message}", err=True
        )
        yield


class _Commands(click.Group):
    """Ctrl-C in any command: one line and the shell's status 130, not click's "Aborted!" and 1
    (the same as `qclassify.__main__.run` for Ctrl-C while the package is being imported)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(INTERRUPTED_MESSAGE, err=True)
            raise click.exceptions.Exit(INTERRUPTED_EXIT_CODE) from None


@click.group(cls=_Commands)
@click.version_option(package_name="qclassify")
@click.pass_context
def main(ctx: click.Context) -> None:
    """MobileNetV2 with a quantum feature layer for imbalanced medical image classification.

    \b
    Example:
        qclassify fit balanced/ --out runs/q --weights none --image-size 64
        qclassify evaluate runs/q
        qclassify predict runs/q new_images/ > predictions.csv
        qclassify compare data/ --augmented balanced/ --out report/ --weights none
    """
    ctx.with_resource(_warnings_as_lines())


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run folder [default: runs/<model>-<date>-<time>].")
@click.option("--model", type=click.Choice(MODEL_NAMES), default=_DEFAULTS.model,
              show_default=True)
@training_options
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier run in --out.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run in --out after its last finished epoch "
                   "(same options; the result equals an uninterrupted run).")
@seeds_option
@quiet_option
@click.pass_context
def fit(ctx: click.Context, data: Path, out: Path | None, overwrite: bool, resume: bool,
        quiet: bool, seeds: list[int] | None, **options: Any) -> None:
    """Train a model on DATA (DATA/<class>/* or DATA/train|val|test/<class>/*).

    \b
    Example:
        diffaug balance data/ balanced/ --ratio 0.7 --seed 0
        qclassify fit balanced/ --out runs/q --weights none --image-size 64
        qclassify fit balanced/ --out runs/q2 --model resnet18 --epochs 60 --patience 10
        qclassify fit balanced/ --out runs/q2 --model resnet18 --epochs 60 --patience 10 --resume
        qclassify fit balanced/ --out runs/s --weights none --recipe scratch --lr 3e-4
        qclassify fit balanced/ --out runs/q5 --weights none --seeds 0-4
    """
    from qclassify import train

    _check_one_seed_option(seeds)
    config = _train_config(ctx, options)
    run_dir = out or Path("runs") / f"{config.model}-{datetime.now():%Y%m%d-%H%M%S}"
    if seeds is not None:
        _check_out(run_dir, data)
        _fit_ensemble(data, run_dir, config, seeds, overwrite=overwrite, resume=resume,
                      quiet=quiet)
        return

    def log_epoch(record: EpochRecord) -> None:
        click.echo(record.summary(resolved.epochs))

    with _torchrun_processes(config.device):
        _check_out(run_dir, data)
        with _one_line_errors():
            config.validate()
            resolved = config.resolved()
            result = train.fit(data, run_dir, resolved, progress=not quiet,
                               overwrite=overwrite, resume=resume, on_epoch=log_epoch,
                               on_start=lambda: click.echo(config.recipe_summary()))
        stop = "early stop" if result.stopped_early else "all epochs"
        # Named only now: a run refused by validation never creates its folder.
        click.echo(f"run folder: {run_dir}")
        click.echo(
            f"best epoch {result.best_epoch} of {len(result.history)} ({stop}); "
            f"{result.train_seconds:.1f}s; saved {run_dir / MODEL_FILE}"
        )


def _fit_ensemble(data: Path, run_dir: Path, config: TrainConfig, seeds: list[int], *,
                  overwrite: bool, resume: bool, quiet: bool) -> None:
    """`fit --seeds`: one member per seed (`qclassify.ensemble.fit_seeds`)."""
    from qclassify.ensemble import fit_seeds

    def log_epoch(seed: int, record: EpochRecord) -> None:
        click.echo(f"seed {seed}  {record.summary(resolved.epochs)}")

    with _one_line_errors():
        config.validate()
        resolved = config.resolved()
        result = fit_seeds(data, run_dir, config, seeds, progress=not quiet,
                           overwrite=overwrite, resume=resume, on_epoch=log_epoch,
                           on_start=lambda: click.echo(config.recipe_summary()))
    click.echo(f"run folder: {run_dir}")
    reused = f"; already finished: {_seed_list(result.skipped)}" if result.skipped else ""
    click.echo(f"seed ensemble of {len(seeds)}: trained {_seed_list(result.trained)}{reused}")


def _seed_list(seeds: Any) -> str:
    return ", ".join(str(seed) for seed in seeds) or "none"


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@bootstrap_option
@positive_option
@seed_option
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@_reading_options(recorded=True)
@json_option
@quiet_option
def evaluate(run: Path, data: Path | None, n_bootstrap: int, positive: str | None, seed: int,
             device: str, batch_size: int, frames: str | None,
             window: tuple[float, float] | None, as_json: bool, quiet: bool) -> None:
    """Test-set metrics of RUN with bootstrap 95% CIs (DATA defaults to the training data).

    A seed ensemble (fit --seeds) is evaluated by its members' mean probability; its
    metrics.json adds every member's metrics and their mean, sd and 95% t-interval.

    Writes metrics.json, predictions.csv, confusion_matrix.png and roc.png into RUN.

    \b
    Example:
        qclassify evaluate runs/q
        qclassify evaluate runs/q --bootstrap 2000 --json > metrics.json
    """
    from qclassify.ensemble_run import evaluate_any
    from qclassify.metrics import METRIC_NAMES

    with _one_line_errors():
        metrics = evaluate_any(run, data, n_bootstrap=n_bootstrap, positive=positive, seed=seed,
                               batch_size=batch_size, device=device, progress=not quiet,
                               frames=frames, window=window).metrics
    if as_json:
        click.echo(json.dumps(metrics, indent=2, allow_nan=True))
        return
    for name in METRIC_NAMES:
        click.echo(f"{name:<12} {_number(metrics[name]['value'])}  "
                   f"95% CI {_interval(metrics[name]['ci95'])}")
    if "members_summary" in metrics:  # a seed ensemble: the values above are the ensemble's
        auc = metrics["members_summary"]["auc"]
        click.echo(f"members      auc mean {_number(auc['mean'])} sd {_number(auc['sd'])}  "
                   f"95% t-interval {_interval(auc['ci95'])} over {auc['n']} seeds")
    positive_name = metrics.get("positive_class") or "macro average"
    click.echo(f"n_test {metrics['n_test']}, positive: {positive_name}; "
               f"wrote {run / METRICS_FILE}")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@device_option
@_reading_options(recorded=True)
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="auto = onnxruntime on the CPU when qclassify[onnx] is installed, else "
                   "torch; onnxruntime exports the model once into RUN/.cache/.")
@quiet_option
def predict(run: Path, paths: tuple[Path, ...], batch_size: int, device: str,
            frames: str | None, window: tuple[float, float] | None, engine: str,
            quiet: bool) -> None:
    """Print CSV path,predicted_class,p_<class>... for images and folders of images.

    A seed ensemble (fit --seeds) predicts its members' mean probability.

    Folders are searched recursively (dot-entries skipped). The CSV goes to stdout, progress
    bars and warnings to stderr.

    \b
    Example:
        qclassify predict runs/q new_images/ > predictions.csv
        qclassify predict runs/q scan_001.png scan_002.png --device cpu
        qclassify predict runs/q new_images/ --engine torch
    """
    from qclassify.ensemble_run import predict_any

    with _one_line_errors():
        rows = predict_any(run, paths, batch_size=batch_size, device=device,
                           progress=not quiet, frames=frames, window=window, engine=engine)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    click.echo(buffer.getvalue(), nl=False)


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "export_format", type=click.Choice(EXPORT_FORMATS), default="onnx",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model file [default: RUN/model.onnx or RUN/model.ts]; its description "
                   "goes to OUT.json.")
def export(run: Path, export_format: str, out: Path | None) -> None:
    """Export RUN's model (quantum head included, softmax inside) to run without qclassify.

    The file maps normalised images (N, 3, S, S) float32 to class probabilities; FILE.json
    beside it gives the preprocessing, class names, decision rule and the file's SHA-256.

    \b
    Example:
        qclassify export runs/q --format onnx
        qclassify export runs/q --format torchscript --out deploy/q.ts
    """
    from qclassify.export import export_run

    with _one_line_errors():
        written = export_run(run, export_format, out)
    click.echo(f"wrote {written} and {written}.json")


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--augmented", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The diffaug-balanced copy of DATA (`diffaug balance DATA "
              "AUG`); the runs on balanced data need it.")
@click.option("--models", multiple=True,
              help="Runs to make: model names (every default run of the model) or "
                   "model@original / model@balanced; comma-separated or repeated "
                   "[default: the paper's seven runs].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs") / "compare", show_default=True,
              help="Report folder; its runs/ subfolder is reused by a later call.")
@training_options
@seeds_option
@bootstrap_option
@positive_option
@json_option
@quiet_option
@click.pass_context
def compare(ctx: click.Context, data: Path, augmented: Path | None, models: tuple[str, ...],
            out: Path, n_bootstrap: int, positive: str | None, as_json: bool, quiet: bool,
            seeds: list[int] | None, **options: Any) -> None:
    """Section 3 of the paper on DATA: the proposed model (qmobilenet on the balanced data),
    four baselines and two ablations, all tested on DATA's test images, with paired tests.

    \b
    Example:
        diffaug balance data/ balanced/ --ratio 0.7 --seed 0
        qclassify compare data/ --augmented balanced/ --out report/ --weights none
        qclassify compare data/ --augmented balanced/ --models qmobilenet@balanced,resnet18
        qclassify compare data/ --augmented balanced/ --out report5/ --seeds 0-4
    """
    from qclassify.compare import compare as compare_runs

    _check_one_seed_option(seeds)
    selected = [name for entry in models for name in entry.split(",") if name.strip()]
    with _torchrun_processes(options["device"]) as ranks:
        _check_out(out, data, augmented)
        with _one_line_errors():
            result = compare_runs(data, augmented, out, models=selected or None,
                                  train_config=_train_config(ctx, options),
                                  n_bootstrap=n_bootstrap, positive=positive,
                                  progress=not quiet, seeds=seeds)
    if not ranks.is_main:  # under torchrun, rank 0 reports
        return
    if as_json:
        summary = {"reference": result.reference, "trained": result.trained,
                   "skipped": result.skipped, "rows": result.rows,
                   **({} if seeds is None else {"seeds": seeds,
                                                "seed_summary": result.seed_summary}),
                   "files": {name: str(path) for name, path in result.files.items()}}
        click.echo(json.dumps(summary, indent=2, allow_nan=True))
        return
    click.echo(f"{'run':<24}{'accuracy':>10}{'f1':>8}{'auc':>8}{'DeLong p':>10}{'McNemar p':>11}")
    for row in result.rows:
        click.echo(f"{row['run']:<24}{_number(row['accuracy']):>10}{_number(row['f1']):>8}"
                   f"{_number(row['auc']):>8}{_number(row['delong_p']):>10}"
                   f"{_number(row['mcnemar_p']):>11}")
    if seeds is not None:
        _echo_seed_summary(result.seed_summary, len(seeds))
    reused = len(result.rows) - len(result.trained)
    click.echo(f"trained {len(result.trained)} run(s), reused {reused}; p-values against "
               f"{result.reference}; report: {result.files['results_md']}")


def _echo_seed_summary(summary: list[dict], n_seeds: int) -> None:
    """The across-seeds AUC of each row and its paired t-test against the reference."""
    click.echo(f"\nAUC across {n_seeds} seeds (the table above: the seed ensembles)")
    click.echo(f"{'run':<24}{'mean':>8}{'sd':>8}{'95% t-interval':>20}{'paired p':>10}")
    for row in summary:
        interval = (None if row["auc_ci_low"] is None
                    else [row["auc_ci_low"], row["auc_ci_high"]])
        click.echo(f"{row['run']:<24}{_number(row['auc_mean']):>8}{_number(row['auc_sd']):>8}"
                   f"{_interval(interval):>20}{_number(row['auc_paired_p']):>10}")


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _interval(bounds: list[float] | None) -> str:
    return "n/a" if bounds is None else f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"
