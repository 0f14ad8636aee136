"""Command line interface: a thin shell over the library (parse options, call one function, print).

Every bad-input path ends in one ``Error: ...`` line: problems with the arguments or the input
folder exit with status 2 (click's usage-error code), failures while reading or writing exit 1.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import click

from diffaug.augment import as_ratio
from diffaug.balance import (
    BalanceReport,
    OutputFolderBusyError,
    ShardsIncompleteError,
    balance_folder,
    finish_shards,
)
from diffaug.fid import (
    ENGINES,
    FID_DIMS,
    FidExtraMissingError,
    FidReport,
    InceptionWeightsError,
    compute_fid,
    fid_of_balanced_classes,
    require_fid_extra,
    save_fid_stats,
)
from diffaug.groups import group_source
from diffaug.io import printable_path
from diffaug.medical import MedicalExtraMissingError
from diffaug.schedule import MAX_CLI_TIMESTEPS, NoiseSchedule
from diffaug.shards import parse_shard

# What --finish takes from the shards' run record instead of the command line.
_RUN_OPTIONS = ("ratio", "timesteps", "beta_start", "beta_end", "blur_sigma", "brightness", "seed")


class InputError(click.ClickException):
    """A bad option or input folder: printed as one ``Error:`` line, exit status 2."""

    exit_code = 2


def _parse_ratio(ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
    # Parsed from the text, not from a float, so that eq. 3 sees exactly what was typed.
    if value is None:
        return None  # only --finish goes without it (checked in the command)
    try:
        return as_ratio(value)
    except ValueError:
        raise InputError(f"Invalid value for '--ratio': {value!r} is not a number in (0, 1] "
                         "(the minority/majority count after balancing).") from None


def _parse_shard(ctx: click.Context, param: click.Parameter,
                 value: str | None) -> tuple[int, int] | None:
    try:
        return None if value is None else parse_shard(value)
    except ValueError as err:
        raise InputError(f"Invalid value for '--shard': {err}") from None


def _check_timesteps(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if not 1 <= value <= MAX_CLI_TIMESTEPS:
        raise InputError(f"Invalid value for '--timesteps': {value} is not in 1 … "
                         f"{MAX_CLI_TIMESTEPS} (DDPM's T; the paper uses 5).")
    return value


@contextlib.contextmanager
def _progress(quiet: bool, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done_increment, total)`` callback drawing a click progress bar on stderr."""
    if quiet:
        yield None
        return
    with contextlib.ExitStack() as stack:
        bars: list = []  # the bar opens once the library reports the total

        def advance(done_increment: int, total: int) -> None:
            if not bars:
                bar = click.progressbar(length=total, label=label, file=sys.stderr)
                bars.append(stack.enter_context(bar))
            bars[0].update(done_increment)

        yield advance


@click.group()
@click.version_option(package_name="diffaug")
def main() -> None:
    """Forward-diffusion oversampling of minority image classes (paper section 2.2)."""


@main.command()
@click.argument("in_dir", metavar="IN", type=click.Path(path_type=Path))
@click.argument("out_dir", metavar="OUT", type=click.Path(path_type=Path))
@click.option("--ratio", callback=_parse_ratio,
              help="Minority/majority count after balancing, in (0, 1] (eq. 3). Required "
                   "except with --finish.")
@click.option("--timesteps", default=5, show_default=True, type=int, callback=_check_timesteps,
              help=f"T, the number of diffusion steps (eq. 2), 1 to {MAX_CLI_TIMESTEPS}.")
@click.option("--beta-start", default=1e-4, show_default=True, type=float, help="First beta (eq. 2).")
@click.option("--beta-end", default=0.02, show_default=True, type=float, help="Last beta (eq. 2).")
@click.option("--blur-sigma", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="Gaussian blur standard deviation in pixels (eq. 4).")
@click.option("--brightness", nargs=2, default=(0.9, 1.1), show_default=True, type=float,
              help="Range of the brightness factor gamma (eq. 4).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Run seed: the same seed gives byte-identical output.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Worker processes; the output does not depend on it.")
@click.option("--dry-run", is_flag=True, help="Print the plan and write nothing.")
@click.option("--shard", metavar="K/N", callback=_parse_shard,
              help="Write only the K-th of N disjoint parts of the run (1 <= K <= N); run all "
                   "N, on any machines sharing OUT, then --finish.")
@click.option("--finish", is_flag=True,
              help="After every --shard K/N: check all parts and write the manifest and run "
                   "record. Takes the options the shards recorded in OUT.")
@click.option("--fid", "with_fid", is_flag=True,
              help="Then report FID and KID of each class's synthetic images against its "
                   "originals (needs the fid extra).")
@click.option("--groups", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV file with columns path,group (paths relative to IN): warn when a "
                   "group (patient) has images in more than one split.")
@click.option("--group-by", metavar="KEYWORD",
              help="The same check with groups read from a DICOM attribute, e.g. PatientID "
                   "(needs diffaug[dicom]).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def balance(in_dir: Path, out_dir: Path, ratio: Decimal, timesteps: int, beta_start: float,
            beta_end: float, blur_sigma: float, brightness: tuple[float, float], seed: int,
            workers: int, dry_run: bool, shard: tuple[int, int] | None, finish: bool,
            with_fid: bool, groups: Path | None, group_by: str | None, quiet: bool) -> None:
    """Oversample the minority classes of IN into OUT with forward diffusion.

    IN holds class folders (IN/<class>/*) or split folders (IN/train/<class>/*, IN/val/...,
    IN/test/...; only train is balanced). OUT receives byte-identical copies of the originals
    and of IN's other top-level files, the synthetic images (syn_<stem>_<k>.png),
    diffaug-manifest.csv and diffaug-run.json. Names starting with a dot are ignored; links in
    IN are followed and copied as files.

    One run at a time per OUT (an flock on the OUT folder). Running the same command again
    finishes an interrupted run, or verifies a finished one (every file's sha256 or bytes) and
    rewrites it if anything is missing or changed.

    On a cluster, run --shard 1/N ... N/N (same options, any order, in parallel, one lock per
    shard), then `diffaug balance IN OUT --finish`: OUT is then byte for byte the OUT of one
    run. A killed shard is rerun with the same command.
    """
    started = time.perf_counter()
    _check_finish_options(click.get_current_context(), finish, shard)
    if with_fid:
        with _fid_errors():
            require_fid_extra()  # before the work, not after it
    try:
        patient_groups = group_source(groups, group_by)
        with _warnings_as_lines(), _progress(quiet or dry_run, "Balancing") as progress:
            if finish:
                report = finish_shards(in_dir, out_dir, workers=workers, dry_run=dry_run,
                                       progress=progress)
            else:
                schedule = NoiseSchedule.linear(timesteps=timesteps, beta_start=beta_start,
                                                beta_end=beta_end)
                report = balance_folder(in_dir, out_dir, ratio=ratio, schedule=schedule,
                                        blur_sigma=blur_sigma, brightness=brightness, seed=seed,
                                        workers=workers, dry_run=dry_run, progress=progress,
                                        shard=shard, groups=patient_groups)
    except ValueError as err:
        raise InputError(str(err)) from None
    except (OSError, OutputFolderBusyError, ShardsIncompleteError, ImportError) as err:
        raise click.ClickException(str(err)) from None
    for skipped in report.skipped:
        click.echo(f"Warning: skipped {printable_path(skipped.path)}: {skipped.reason}", err=True)
    for excluded in report.excluded_sources:
        click.echo(f"Warning: copied {printable_path(excluded.path)} but not used to "
                   f"synthesise: {excluded.reason}", err=True)
    if report.repaired:
        click.echo(f"Warning: {len(report.repaired)} files of the finished run in "
                   f"{printable_path(report.out_dir)} were missing or changed (first: "
                   f"{printable_path(report.repaired[0])}); the run was written again.", err=True)
    click.echo(_format_plan(report))
    click.echo(_format_summary(report, time.perf_counter() - started))
    if with_fid and not report.dry_run:
        with _fid_errors(), _progress(quiet, "Inception features") as progress:
            reports = fid_of_balanced_classes(report.out_dir, progress=progress)
        for key, fid_report in reports.items():
            click.echo(f"{key} synthetic vs originals: {_format_fid(fid_report)} "
                       f"({fid_report.n_other} synthetic, {fid_report.n_real} originals)")


def _check_finish_options(ctx: click.Context, finish: bool, shard: tuple[int, int] | None) -> None:
    """--finish takes the run's options from OUT: given again, they could only disagree."""
    if not finish:
        if ctx.params["ratio"] is None:
            raise InputError("Missing option '--ratio' (the minority/majority count after "
                             "balancing, in (0, 1]).")
        return
    given = [name for name in (*_RUN_OPTIONS, "shard")
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
    if given:
        raise InputError(f"--finish takes the options the shards recorded in OUT; leave out "
                         f"--{given[0].replace('_', '-')}.")


def _format_plan(report: BalanceReport) -> str:
    lines = []
    for split, counts in report.counts_before.items():
        balanced = split == report.balanced_split
        title = f"{split}/" if split else "classes"
        lines.append(f"{title}: " + ("balanced" if balanced else "copied unchanged"))
        lines.append(f"  {'class':<20} {'before':>8} {'synthetic':>10} {'after':>8}")
        for name, before in counts.items():
            added = report.synthesis.get(name, 0) if balanced else 0
            lines.append(f"  {name:<20} {before:>8} {added:>10} {before + added:>8}")
    return "\n".join(lines)


def _format_summary(report: BalanceReport, seconds: float) -> str:
    if report.shard is not None and not report.already_done:
        return _format_shard_summary(report, seconds)
    if report.shards_merged:
        return (f"Finished: checked and merged {report.shards_merged} shards into "
                f"{report.out_dir}; manifest: {report.manifest}")
    if report.dry_run:
        return f"Dry run: would write {report.n_synthetic_planned} synthetic images to {report.out_dir}."
    if report.already_done:
        return f"Nothing to do: {report.out_dir} already holds this run ({report.manifest})."
    rate = report.n_synthetic / seconds if seconds > 0 else float("inf")
    return (f"Wrote {report.n_synthetic} synthetic images and copied {report.n_copied} originals "
            f"to {report.out_dir} in {seconds:.1f} s ({rate:.1f} synthetic images/s); "
            f"manifest: {report.manifest}")


def _format_shard_summary(report: BalanceReport, seconds: float) -> str:
    part = report.shard
    share = (f"{len(part.copies)} originals and {len(part.rows)} of "
             f"{report.n_synthetic_planned} synthetic images (from {part.n_sources} sources)")
    if report.dry_run:
        return f"Dry run: shard {part} would copy {share} to {report.out_dir}."
    return (f"Shard {part}: copied {share} to {report.out_dir} in {seconds:.1f} s; once every "
            f"shard is done: diffaug balance {report.in_dir} {report.out_dir} --finish")


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """After the block succeeds, the library's warnings as ``Warning:`` lines on stderr (a
    failure prints its one ``Error:`` line alone)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield
    for warning in caught:
        click.echo(f"Warning: {warning.message}", err=True)


@contextlib.contextmanager
def _fid_errors() -> Iterator[None]:
    """FID failures as one ``Error:`` line; after success, the library's warnings as
    ``Warning:`` lines on stderr."""
    with _warnings_as_lines():
        try:
            yield
        except (FidExtraMissingError, InceptionWeightsError, MedicalExtraMissingError) as err:
            raise click.ClickException(str(err)) from None
        except ValueError as err:
            raise InputError(str(err)) from None
        except OSError as err:
            raise click.ClickException(str(err)) from None


def _format_fid(report: FidReport) -> str:
    kid = "" if report.kid is None else f"  KID: {report.kid.mean:.6g} ± {report.kid.std:.6g}"
    return f"FID: {report.fid}{kid}"


@main.command()
@click.argument("real", type=click.Path(path_type=Path))
@click.argument("other", type=click.Path(path_type=Path))
@click.option("--batch-size", default=50, show_default=True, type=click.IntRange(min=1),
              help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when available, else CPU), cpu, cuda, cuda:0, ...")
@click.option("--dims", default=str(FID_DIMS[-1]), show_default=True,
              type=click.Choice([str(dims) for dims in FID_DIMS]),
              help="Inception features: 2048 is pool3, the others earlier blocks (pytorch-fid).")
@click.option("--num-workers", type=click.IntRange(min=0),
              help="Threads decoding images while the network runs [default: min(8, CPUs)].")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="What runs the network: torch, or onnxruntime (CPU only; exported once "
                   "and cached in ~/.cache/diffaug or $DIFFAUG_CACHE). auto: onnxruntime on "
                   "a CPU when installed, else torch.")
@click.option("--save-stats", is_flag=True,
              help="Write the statistics of REAL to OTHER (.npz) instead, like pytorch-fid.")
@click.option("--recursive", is_flag=True, help="Also read images in subfolders.")
@click.option("--kid", is_flag=True,
              help="Also report KID (unbiased, mean ± std over 100 random subsets of 1000 "
                   "images, or of half the smaller set when it has fewer).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fid(real: Path, other: Path, batch_size: int, device: str, dims: str,
        num_workers: int | None, engine: str, save_stats: bool, recursive: bool, kid: bool,
        quiet: bool) -> None:
    """FID between two image folders or pytorch-fid .npz statistics files.

    The number `python -m pytorch_fid REAL OTHER` gives (same network, weights, resize and
    scaling), computed faster, and also for folders of mixed image sizes, 16-bit images and
    nested folders (--recursive). Weights are pytorch-fid's, cached in $TORCH_HOME.
    """
    options = {"dims": int(dims), "batch_size": batch_size, "device": device,
               "num_workers": num_workers, "recursive": recursive, "engine": engine}
    with _fid_errors(), _progress(quiet, "Inception features") as progress:
        if save_stats:
            written = save_fid_stats(real, other, **options, progress=progress)
        else:
            report = compute_fid(real, other, **options, kid=kid, progress=progress)
    click.echo(f"Saved statistics of {real} to {written}" if save_stats else _format_fid(report))
