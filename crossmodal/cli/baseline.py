"""``crossmodal baseline``: accuracy of a converted model on CMPlaces modalities, with label muting."""
from __future__ import annotations

from pathlib import Path

import click

from crossmodal.cli.options import (
    ProgressBars,
    csv_list,
    data_options,
    echo_json,
    engine_options,
    fast_decode_option,
    handle_errors,
    json_option,
    label_map_option,
    locks_output,
    step_printer,
)


@click.command("baseline")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="A converted model folder (model.json + weights.h5, model.onnx / model.keras) with labels.")
@click.option("--modality", required=True,
              help="natural, clipart, sketch (or a modality of the config); several comma-separated "
                   "run one after the other and add a comparison table and chart.")
@data_options()
@click.option("--images", type=click.Path(path_type=Path), help="Images root of a single modality.")
@click.option("--list", "list_file", type=click.Path(path_type=Path),
              help="List file of 'path label' lines (label-list layout; needs --categories).")
@click.option("--categories", type=click.Path(path_type=Path), help="Categories file ('name index' lines).")
@engine_options(32)
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Evaluate at most N images per modality, evenly spaced over the list (a quick look).")
@label_map_option
@click.option("--unmapped", type=click.Choice(["exclude", "keep"]), default="exclude", show_default=True,
              help="Images of categories without a model label: left out, or scored as errors.")
@click.option("--features", default=None,
              help="Feature layers cached beside the logits (comma-separated: fc7, pool5, fc6, avgpool …) for "
                   "`retrieval` [default: the network's feature blob: fc7 for VGG/AlexNet, avgpool for "
                   "ResNet/DenseNet].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("baseline-out"),
              show_default=True, help="Output folder (one sub-folder per modality when several).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Feature cache folder [default: $CROSSMODAL_CACHE, else <out>/cache]. An interrupted run "
                   "resumes from it.")
@fast_decode_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or notes.")
@json_option
@handle_errors
@locks_output("out_dir", "baseline")
def baseline(model_dir, modality, data_root, config, split, images, list_file, categories, backend, device,
             precision, trt, batch_size, workers, threads, limit, label_map, unmapped, features, out_dir, cache_dir,
             fast_decode, quiet, as_json):
    """Evaluate a converted scene CNN, unadjusted, on CMPlaces modalities (natural images, clip
    art, sketches): top-1/top-5 with label muting, 95 % intervals, per-class accuracy, confusion
    matrix. Writes metrics.json, per_class.csv, predictions.csv, report.md and PNG plots to --out.

    \b
    Example:
      crossmodal baseline --model models/vgg16-pt --modality natural,clipart,sketch \\
          --data-root /data/cmplaces --out runs/baseline
    """
    from crossmodal.evaluate.baseline.job import run_baseline, summary_line

    quiet_all = quiet or as_json
    with ProgressBars(disable=quiet_all) as bars:
        run = run_baseline(model_dir, modality, out_dir=out_dir, data_root=data_root, config=config, split=split,
                           images=images, list_file=list_file, categories=categories, backend=backend,
                           device=device, batch_size=batch_size, workers=workers, threads=threads, limit=limit,
                           label_map=label_map, unmapped=unmapped, features=None if features is None else csv_list(features),
                           cache_dir=cache_dir, draft=fast_decode, precision=precision, trt=trt,
                           on_step=step_printer(quiet_all),
                           on_start=bars.start, on_batch=bars.update)
    if as_json:
        data = [r.metrics for r in run.results]
        echo_json(data[0] if len(data) == 1 else {"runs": data,
                                                   "comparison": {k: str(v) for k, v in run.comparison.items()}})
        return
    if run.results:
        first = run.results[0].metrics
        if first.get("banner"):
            click.echo(f"*** {first['banner'].upper()} ***")
        click.echo(f"weights: {first['weights']['description']}")
    for r in run.results:
        click.echo(summary_line(r.metrics) + f" → {r.files['metrics.json']}")
    if run.comparison:
        click.echo(f"comparison: {run.comparison['comparison.md']}, {run.comparison['accuracy_by_modality.png']}")
