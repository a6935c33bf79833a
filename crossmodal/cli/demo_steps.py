"""What ``crossmodal demo`` says around its work: that it replaces an earlier demo, and what to try next."""
from __future__ import annotations

from pathlib import Path

import click


def announce_replacement(out_dir: Path) -> None:
    """One line when ``out_dir`` holds an earlier demo (its files are replaced, one by one)."""
    if (out_dir / "verify.json").is_file() or (out_dir / "model").is_dir():
        click.echo(f"note: {out_dir} holds an earlier demo: its files are replaced")


def next_steps(model_dir: Path, images: Path | None) -> None:
    """The commands a user tries next on the converted model (printed last)."""
    pictures = images or "PHOTOS_DIR"
    click.echo("next, on this model (random weights: the numbers mean nothing, the commands are real):")
    click.echo(f"  crossmodal predict --model {model_dir} {pictures} -k 5")
    click.echo(f"  crossmodal explain --model {model_dir} {pictures} --out explain-out")
    click.echo(f"  crossmodal baseline --model {model_dir} --modality natural,clipart,sketch --data-root "
               "/data/cmplaces --out baseline-out")
