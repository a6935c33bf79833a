"""The ``crossmodal`` command line: a thin Click layer over the library.

Each command lives in its own module here, parses options, calls the library and
prints. Library errors (:class:`~crossmodal.errors.CrossmodalError`) become one
line on stderr and exit code 2 (bad input) or 1; so do Click's own usage errors
(a missing argument, a bad option value), which Click would print as four lines.
Heavy frameworks are imported inside the commands, so ``crossmodal --help`` stays fast.
"""
from __future__ import annotations

import importlib

import click

from crossmodal._version import __version__

#: command name → "module:attribute", imported on first use.
COMMANDS = {
    "convert": "crossmodal.cli.convert:convert",
    "inspect": "crossmodal.cli.inspect:inspect_cmd",
    "verify": "crossmodal.cli.verify:verify",
    "demo": "crossmodal.cli.demo:demo",
    "fetch": "crossmodal.cli.fetch:fetch",
    "baseline": "crossmodal.cli.baseline:baseline",
    "retrieval": "crossmodal.cli.retrieval:retrieval",
    "probe": "crossmodal.cli.probe:probe",
    "predict": "crossmodal.cli.predict:predict",
    "explain": "crossmodal.cli.explain:explain",
    "finetune": "crossmodal.cli.finetune:finetune",
    "units": "crossmodal.cli.units:units",
}


class OneLineUsageError(click.UsageError):
    """A usage error shown as the one line ``Error: <message>`` (exit code 2), without
    Click's usage synopsis and "Try --help" hint."""

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=True)


#: Click ≥ 8.2 raises this for a group run with no arguments (its help, not an error).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line(exc: click.UsageError) -> click.UsageError:
    if isinstance(exc, (OneLineUsageError, _NO_ARGS_IS_HELP)):
        return exc  # already one line, or the help text asked for by running with no arguments
    return OneLineUsageError(exc.format_message(), exc.ctx)


class LazyGroup(click.Group):
    """A group whose commands are imported only when listed or run, and whose usage
    errors (its own and its commands') are one line on stderr."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._load(name) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # a command not built yet
                return None
            raise


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crossmodal")
@click.option("--verbose", "-v", is_flag=True,
              help="Also show TensorFlow's own start-up and log lines (hidden by default).")
def main(verbose: bool = False) -> None:
    """Convert Places365 scene CNNs between PyTorch, Caffe, Keras 3 and ONNX, verify
    them layer by layer, and evaluate them on natural images, clip art and sketches."""
    from crossmodal.cli import quiet
    quiet.verbose() if verbose else quiet.install()
    _notes_as_lines()


def _notes_as_lines() -> None:
    """The toolkit's :class:`~crossmodal.errors.FormatNote` warnings as one ``note:`` line on stderr
    each (other warnings keep Python's own format)."""
    import warnings

    from crossmodal.errors import FormatNote
    shown = warnings.showwarning
    if getattr(shown, "crossmodal_notes", False):  # installed already (several commands in one process)
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FormatNote):
            click.echo(f"note: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)
    show.crossmodal_notes = True
    warnings.showwarning = show
    warnings.simplefilter("always", FormatNote)
