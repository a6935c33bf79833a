"""The ``crossmodal`` command line: a thin Click layer over the library.

Each command lives in its own module here, parses options, calls the library and
prints. Library errors (:class:`~crossmodal.errors.CrossmodalError`) become one
line on stderr and exit code 2 (bad input) or 1. Heavy frameworks are imported
inside the commands, so ``crossmodal --help`` stays fast.
"""
from __future__ import annotations

import importlib

import click

from crossmodal import __version__

#: command name → "module:attribute", imported on first use.
COMMANDS = {
    "convert": "crossmodal.cli.convert:convert",
    "inspect": "crossmodal.cli.inspect:inspect_cmd",
    "verify": "crossmodal.cli.verify:verify",
    "demo": "crossmodal.cli.demo:demo",
    "fetch": "crossmodal.cli.fetch:fetch",
    "baseline": "crossmodal.cli.baseline:baseline",
    "retrieval": "crossmodal.cli.retrieval:retrieval",
}


class LazyGroup(click.Group):
    """A group whose commands are imported only when listed or run."""

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
def main() -> None:
    """Convert Places365 scene CNNs between PyTorch, Caffe, Keras 3 and ONNX, verify
    them layer by layer, and evaluate them on natural images, clip art and sketches."""
