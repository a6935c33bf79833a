"""``crossmodal retrieval``: within- and cross-modal mAP of a converted model's features."""
from __future__ import annotations

from pathlib import Path

import click

from crossmodal.cli.options import (
    ProgressBars,
    data_options,
    echo_json,
    engine_options,
    fast_decode_option,
    handle_errors,
    json_option,
    locks_output,
    step_printer,
)


@click.command("retrieval")
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="A converted model folder (model.json + weights.h5, model.onnx / model.keras), or a fine-tune "
                   "run folder with tower models (model-<modality>/).")
@click.option("--model-per-modality", "per_modality", default=None,
              help="Towers: each modality's images through its own model, e.g. sketch=DIR,clipart=DIR.")
@click.option("--query", "queries", help="Query modality (natural, clipart, sketch, or one of the config); "
                                         "several comma-separated.")
@click.option("--target", "targets", help="Target modality (several comma-separated) [default: the queries].")
@click.option("--all", "all_pairs", is_flag=True,
              help="Every query × target pair over the image modalities present in the data.")
@click.option("--layer", default=None,
              help="Feature layer: a public blob of the network (fc7, fc6, pool5 for VGG; avgpool for "
                   "ResNet/DenseNet; pool5 is flattened channel-first) [default: the network's feature blob].")
@click.option("--metric", type=click.Choice(["cosine", "euclidean"]), default="cosine", show_default=True)
@click.option("-k", "--k", "k", type=click.IntRange(1), default=10, show_default=True,
              help="Cut-off of P@k and R@k (the papers report P@10).")
@data_options()
@engine_options(32, backend_help="Used only for features not yet in the cache.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="At most N images per modality, evenly spaced over the list (as in baseline).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Feature cache folder; give baseline's (e.g. runs/baseline/cache) to reuse its features "
                   "[default: $CROSSMODAL_CACHE, else <out>/cache].")
@fast_decode_option
@click.option("--show", type=click.IntRange(0), default=0,
              help="For each pair, a PNG of the N nearest targets of the query image --show-query.")
@click.option("--show-query", default="0", show_default=True,
              help="The query image for --show: a 0-based index into the query modality's decoded images (data "
                   "set order, images that fail to decode left out), or a path / file name.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("retrieval-out"),
              show_default=True, help="Output folder: retrieval.json, retrieval.md, retrieval.png.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or notes.")
@json_option
@handle_errors
@locks_output("out_dir", "retrieval")
def retrieval(model_dir, per_modality, queries, targets, all_pairs, layer, metric, k, data_root, config, split, backend, device,
              precision, trt, batch_size, workers, threads, limit, cache_dir, fast_decode, show, show_query, out_dir,
              quiet, as_json):
    """Category-level retrieval with a photo-trained network's features: for each query image,
    rank the target modality's images by similarity; relevant = same scene category. Reports
    mAP, P@k and R@k with their exact chance levels, beside the published CMPlaces numbers.

    \b
    Examples:
      crossmodal retrieval --model models/vgg16-pt --query clipart --target natural \\
          --data-root /data/cmplaces --cache runs/baseline/cache
      crossmodal retrieval --model models/vgg16-pt --all --data-root /data/cmplaces --show 10
    """
    from crossmodal.evaluate.retrieval.job import run_retrieval
    from crossmodal.evaluate.retrieval.towers import run_tower_retrieval, tower_models
    from crossmodal.ir.store import is_ir_dir

    if (model_dir is None) == (per_modality is None):
        raise click.UsageError("give --model DIR or --model-per-modality MODALITY=DIR,... (not both)")
    quiet_all = quiet or as_json
    towers = tower_models(per_modality) if per_modality else (
        None if is_ir_dir(model_dir) or not any(model_dir.glob("model-*")) else tower_models(model_dir))
    with ProgressBars(disable=quiet_all) as bars:
        if towers is not None:
            run = run_tower_retrieval(towers, queries, targets, all_pairs=all_pairs, out_dir=out_dir, layer=layer,
                                      metric=metric, k=k, data_root=data_root, config=config, split=split,
                                      backend=backend, device=device, batch_size=batch_size, workers=workers,
                                      threads=threads, cache_dir=cache_dir, draft=fast_decode, precision=precision,
                                      on_step=step_printer(quiet_all), on_start=bars.start, on_batch=bars.update)
        else:
            run = run_retrieval(model_dir, queries, targets, all_pairs=all_pairs, out_dir=out_dir, layer=layer,
                                metric=metric, k=k, data_root=data_root, config=config, split=split,
                                backend=backend, device=device, batch_size=batch_size, workers=workers,
                                threads=threads, limit=limit, cache_dir=cache_dir, draft=fast_decode,
                                precision=precision, trt=trt, show=show, show_query=show_query,
                                on_step=step_printer(quiet_all), on_start=bars.start, on_batch=bars.update)
    if as_json:
        echo_json({"weights": run.results["weights"], "banner": run.results["banner"], "pairs": run.results["pairs"],
                   "files": {n: str(p) for n, p in run.files.items()}, "run": run.results["run"]})
        return
    if run.results.get("banner"):
        click.echo(f"*** {run.results['banner'].upper()} ***")
    click.echo(f"weights: {run.results['weights']['description']}")
    for p in run.results["pairs"]:
        click.echo(f"{p['query']} → {p['target']}: mAP {100 * p['map']:.2f} % (chance {100 * p['chance_map']:.2f}), "
                   f"P@{p['k']} {100 * p['precision_at_k']:.2f} % (chance {100 * p['chance_precision_at_k']:.2f}) "
                   f"— {p['num_included_queries']} queries, {p['num_targets']} targets")
    click.echo(f"→ {run.files['retrieval.json']}, {run.files['retrieval.md']}, {run.files['retrieval.png']}")
