"""The ``run`` block every job's JSON carries: when and how the run was made, and on which weights."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from crossmodal._version import __version__
from crossmodal.io.runs import utc_now
from crossmodal.ir.identity import describe


@dataclass
class RunRecord:
    """When and how a run was made; :meth:`block` is the ``run`` entry of its JSON files."""

    command: str
    settings: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    started: str = field(default_factory=utc_now)
    argv: list[str] = field(default_factory=lambda: list(sys.argv))

    def block(self) -> dict:
        return {"command": self.command, "started_utc": self.started, "finished_utc": utc_now(),
                "argv": self.argv, "settings": self.settings, "cwd": os.getcwd(),
                "crossmodal_version": __version__,
                "weights": {**self.weights, "description": describe(self.weights)}}
