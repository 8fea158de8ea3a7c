"""The ``kdistill`` command: subcommands mapped to plain functions of the Python API."""

from __future__ import annotations

import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Optional

import typer

from kdistill.errors import KDistillError, KDistillWarning

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil a teacher into a student. Bad input ends in one line 'error: ...' and exit "
                       "code 2; a bug of kdistill's own exits 1 with its traceback.")

Overrides = typer.Argument(None, help="key.sub=value overrides, e.g. stages.distil.epochs=3")
RunsDir = typer.Option(Path("runs"), "--runs-dir", help="where run directories are written")
Overwrite = typer.Option(False, "--overwrite", help="replace an existing run directory of the same name")
Quiet = typer.Option(False, "--quiet", "-q", help="no progress bars, epoch lines or table: only the run directory")
TrustCode = typer.Option(False, "--trust-code", help="allow the run's recipe.yaml to import the Python callables it "
                         "names as models (this runs their code, as unpickling would); only for runs you trust")


def demo_recipe() -> Path:
    """The embedded default: Fashion-MNIST, 600 labels, KD + hint from a shipped teacher."""
    return Path(str(resources.files("kdistill") / "recipes" / "demo.yaml"))


def _run(recipe: Path | None, overrides: list[str], runs_dir: Path, overwrite: bool, quiet: bool,
         resume: Path | None = None) -> None:
    from kdistill.evaluate.report import comparison_table
    from kdistill.runner import run as run_recipe

    result = run_recipe(recipe, overrides or [], runs_dir=runs_dir, overwrite=overwrite, progress=not quiet,
                        resume=resume)
    if not result.summary:  # a rank other than 0 of a distributed run: rank 0 reports
        return
    if quiet:
        typer.echo(result.run_dir)
        return
    typer.echo("\n" + comparison_table(result.summary))
    typer.echo(f"\nrun directory: {result.run_dir}  (report: {result.run_dir / 'report.md'})")


@app.command()
def run(recipe: Optional[Path] = typer.Argument(None, help="a YAML recipe"), overrides: Optional[list[str]] = Overrides,
        runs_dir: Path = RunsDir, overwrite: bool = Overwrite, quiet: bool = Quiet,
        resume: Optional[Path] = typer.Option(None, "--resume", help="continue an unfinished run directory "
                                              "from its last checkpoint")) -> None:
    """Run a recipe: train its stages, evaluate, write runs/<name>/ (or continue one with --resume)."""
    if (recipe is None) == (resume is None):
        raise KDistillError("run: give a recipe, or --resume RUN_DIR to continue an unfinished run (not both).")
    _run(recipe, overrides, runs_dir, overwrite, quiet, resume)


@app.command()
def demo(overrides: Optional[list[str]] = Overrides, runs_dir: Path = RunsDir,
         overwrite: bool = Overwrite, quiet: bool = Quiet) -> None:
    """The main job on the embedded default: Fashion-MNIST with 600 labels."""
    _run(demo_recipe(), overrides, runs_dir, overwrite, quiet)


@app.command("eval")
def evaluate(run_dir: Path = typer.Argument(..., help="a finished run directory"),
             weights: Optional[Path] = typer.Option(None, help="a student .safetensors to evaluate instead"),
             latency: bool = typer.Option(True, help="measure CPU latency"),
             data: Optional[Path] = typer.Option(None, "--data", help="other data of the same kind to evaluate on "
                                                 "(an IDX folder, a text or CSV file)"),
             trust_code: bool = TrustCode) -> None:
    """Evaluate a finished run's models on the test set (or on other data) and print the table."""
    from kdistill.evaluate.report import comparison_table
    from kdistill.rebuild import evaluate_run

    typer.echo(comparison_table(evaluate_run(run_dir, weights, latency, data, trust_code=trust_code)))


@app.command()
def report(run_dirs: list[Path] = typer.Argument(..., help="finished run directories"),
           out: Path = typer.Option(Path("report"), "--out", help="where the comparison of several runs goes"),
           overwrite: bool = typer.Option(False, "--overwrite", help="replace a comparison already in --out")) -> None:
    """Draw each run's figures and write its report.md and self-contained report.html; with
    several runs, also one comparison table and chart in --out."""
    from kdistill.evaluate.report import check_report_inputs, compare_runs, write_report

    summaries = check_report_inputs(run_dirs, out if len(run_dirs) > 1 else None, overwrite)  # before writing anything
    for run_dir, summary in zip(run_dirs, summaries):
        write_report(run_dir, summary)
        typer.echo(f"{run_dir / 'report.html'}")
    if len(run_dirs) > 1:
        typer.echo(f"{compare_runs(run_dirs, out, overwrite).with_suffix('.html')}")


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a finished run directory"),
           format: str = typer.Option("safetensors", "--format", help="safetensors | onnx | torchscript"),
           out: Optional[Path] = typer.Option(None, "--out", help="folder to write (default RUN_DIR/export)"),
           overwrite: bool = Overwrite, trust_code: bool = TrustCode) -> None:
    """Export the student alone, with student.json (input shape, normalisation, class names)."""
    from kdistill.rebuild import export_run

    meta = export_run(run_dir, format, out, overwrite, trust_code=trust_code)
    check = f" (checked against PyTorch: max |diff| {meta['max_abs_diff']:.2g})" if "max_abs_diff" in meta else ""
    typer.echo(f"{meta['path']}{check}\n{Path(meta['path']).parent / 'student.json'}")


@app.command()
def cache(recipe: Path = typer.Argument(..., help="a YAML recipe whose stages have a 'cache' section"),
          overrides: Optional[list[str]] = Overrides,
          verify: bool = typer.Option(False, "--verify", help="compare the cache with the live teacher on a sample"),
          quiet: bool = Quiet) -> None:
    """Run the teacher once and store the outputs the recipe's stages need on disk."""
    from kdistill.precompute import cache_recipe

    for entry in cache_recipe(recipe, overrides or [], verify=verify, progress=not quiet):
        line = (f"{entry['stage']}: {entry['samples']:,} samples x {entry['views']} views, taps {entry['taps']}, "
                f"{entry['bytes'] / 2**20:.1f} MB in {entry['folder']}")
        if "max_abs_diff" in entry:
            line += "; verified, max |cached - live| " + ", ".join(f"{k} {v:.2g}" for k, v in entry["max_abs_diff"].items())
        typer.echo(line)


@app.command("check-data")
def check_data(recipe: Path = typer.Argument(..., help="a YAML recipe whose data is read from files"),
               overrides: Optional[list[str]] = Overrides,
               workers: Optional[int] = typer.Option(None, "--workers", help="decoding threads (default: "
                                                     "data.loader.workers, else up to 8)")) -> None:
    """Decode every file of a recipe's data once and list every unreadable one, with the reason
    (the first 20, then the count); exit 2 if any."""
    from kdistill.data.check_data import check_recipe_data
    from kdistill.recipe import load_recipe

    check_recipe_data(load_recipe(recipe, overrides or []), typer.echo, workers)


@app.command()
def init(template: str = typer.Argument(..., help="classify | embed | static | lm | lm-pairs"),
         folder: Path = typer.Argument(Path("."), help="where to write TEMPLATE.yaml (default: here)"),
         overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing TEMPLATE.yaml")) -> None:
    """Write a commented starter recipe for a workflow as DIR/TEMPLATE.yaml; edit the lines marked
    '# change:', then kdistill run it."""
    from kdistill.init import write_template

    typer.echo(write_template(template, folder, overwrite))


@app.callback()
def options(debug: bool = typer.Option(False, "--debug", help="show the traceback behind an error message "
                                       "(may also follow the subcommand)")) -> None:
    """Distil a teacher into a student."""


MESSAGE_CHARS = 1000  # an error line is cut in the middle past this (a value no message shortened itself)


def one_line(message: str) -> str:
    """``message`` on one line of at most MESSAGE_CHARS characters: its start (what is wrong)
    and its end (the fix) kept."""
    message = " ".join(message.splitlines())
    if len(message) <= MESSAGE_CHARS:
        return message
    return f"{message[:MESSAGE_CHARS * 2 // 3]} [...] {message[-(MESSAGE_CHARS // 3 - 7):]}"


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """kdistill's own warnings as one line on stderr, ``warning: ...``; others as Python shows them."""
    text = (f"warning: {message}\n" if issubclass(category, KDistillWarning)
            else warnings.formatwarning(message, category, filename, lineno, line))
    (sys.stderr if file is None else file).write(text)


def main() -> None:
    debug = "--debug" in sys.argv  # show the traceback behind an error message, wherever it is given
    while "--debug" in sys.argv:
        sys.argv.remove("--debug")
    warnings.showwarning = _one_line_warning
    try:
        app()
    except KDistillError as err:
        if debug:
            raise
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
