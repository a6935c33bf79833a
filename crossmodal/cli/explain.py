"""``crossmodal explain``: CAM / Grad-CAM maps of images, or of a baseline run across modalities."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from crossmodal.cli.options import (
    batch_size_option,
    csv_list,
    device_option,
    echo_json,
    fast_decode_option,
    handle_errors,
    json_option,
    locks_output,
    step_printer,
    threads_option,
)


class Progress:
    """A tqdm bar on stderr opened at the first ``update(done, total)`` (so a refusal before
    any work prints only its one line); ``write`` prints above it."""

    def __init__(self, desc: str, disable: bool = False) -> None:
        self.desc, self.disable, self.bar = desc, disable, None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="img", desc=self.desc, disable=self.disable, file=sys.stderr,
                            dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def write(self, text: str) -> None:
        if self.bar is None:
            click.echo(text)
        else:
            self.bar.write(text, file=sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command("explain")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="A converted model folder (model.json + weights.h5); maps run on its PyTorch module.")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: cams.npz, overlays/*.png, explain.md, explain.json.")
@click.option("--method", type=click.Choice(["auto", "cam", "gradcam", "gradcam++"]), default="auto",
              show_default=True, help="auto: CAM on a global-average-pooling + dense head, else Grad-CAM.")
@click.option("--layer", default=None, help="Layer to explain [default: the last spatial ReLU, VGG16 relu5_3; "
                                            "the pooled layer on a CAM head].")
@click.option("--class", "class_name", default=None, help="Explain this class (a label of the model) for every image.")
@click.option("--top", type=click.IntRange(1), default=1, show_default=True, help="One map per top-K class.")
@click.option("--from-run", "from_run", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A baseline output folder: per category, photo / clip art / sketch rows of correct and "
                   "wrong predictions with their maps, and the mean map per modality.")
@click.option("--per-class", type=click.IntRange(1), default=4, show_default=True,
              help="With --from-run: correct and wrong images per category and modality.")
@click.option("--categories", default=None, help="With --from-run: only these categories (comma-separated).")
@device_option()
@batch_size_option(8)
@threads_option
@click.option("--no-overlays", is_flag=True, help="Only cams.npz and the JSON (no PNG per image).")
@fast_decode_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or notes.")
@json_option
@handle_errors
@locks_output("out_dir", "explain")
def explain(model_dir, inputs, out_dir, method, layer, class_name, top, from_run, per_class, categories, device,
            batch_size, threads, no_overlays, fast_decode, quiet, as_json):
    """Where the network looks: class activation maps (CAM on GAP + dense networks, Grad-CAM
    or Grad-CAM++ elsewhere) for images and folders, or across modalities from a baseline run.

    \b
    Examples:
      crossmodal explain --model models/vgg16-pt sketch.png photos/ --out maps
      crossmodal explain --model models/vgg16-pt --from-run runs/baseline --per-class 4 --out maps
    """
    from crossmodal.api import load_model
    from crossmodal.errors import InputError
    from crossmodal.explain.job import run_explain

    if bool(inputs) == bool(from_run):
        raise InputError("give images/folders or --from-run RUN_DIR (one of the two)")
    if class_name is not None and top != 1:
        raise InputError("--class explains one class; --top K the top-K classes: give one of the two")
    if from_run and (class_name is not None or top != 1):
        raise InputError("--from-run explains each image's predicted class; --class and --top do not apply")
    quiet_all = quiet or as_json
    model = load_model(model_dir, backend="torch", device=device, threads=threads, draft=fast_decode)
    bar = Progress("explain", disable=quiet_all)
    progress = bar.update
    with model:
        try:
            if from_run:
                from crossmodal.explain.from_run import run_from_run
                summary = run_from_run(model, from_run, out_dir, per_class=per_class,
                                       categories=csv_list(categories) or None, method=method, layer=layer,
                                       batch_size=batch_size, on_progress=progress,
                                       on_step=step_printer(quiet_all))
            else:
                summary = run_explain(model, inputs, out_dir, method=method, layer=layer, class_name=class_name,
                                      top=top, batch_size=batch_size, overlays=not no_overlays,
                                      on_progress=progress, on_step=step_printer(quiet_all))
        finally:
            bar.close()
    if as_json:
        echo_json({k: v for k, v in summary.items() if k != "maps"})
        return
    if summary.get("banner"):
        click.echo(f"*** {summary['banner'].upper()} ***")
    click.echo(f"weights: {summary['weights']['description']}")
    click.echo(f"{summary['images']} images, {summary['method']} on {summary['layer']} → {out_dir / 'explain.md'}")
    if summary["failed"]:
        click.echo(f"{len(summary['failed'])} image(s) skipped (did not decode):", err=True)
        for f in summary["failed"]:
            click.echo(f"  {f['path']}: {f['reason']}", err=True)
