"""``crossmodal probe``: classifiers trained on a converted model's frozen features (linear probe,
few-shot curves, cross-modal transfer), and the adjusted network as a model folder."""
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


@click.command("probe")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="A converted model folder (model.json + weights.h5, model.onnx / model.keras).")
@click.option("--modality", help="The test modality (natural, clipart, sketch, or one of the config).")
@click.option("--train-modality", help="Train on this modality's features instead (cross-modal transfer).")
@click.option("--all", "all_pairs", is_flag=True,
              help="The whole train × test grid over the modalities present (transfer.png).")
@data_options(split=False, root_help="Folder with one sub-folder per modality (<root>/<modality>/ with train.txt, "
                                     "val.txt, categories.txt).")
@click.option("--train-split", default="train", show_default=True, help="The list the classifier is trained on.")
@click.option("--test-split", default="val", show_default=True, help="The list it is scored on.")
@click.option("--layer", default=None,
              help="Feature layer: fc7, fc6, pool5 or any layer/blob of the model [default: the one the "
                   "network's last dense layer reads, fc7 for VGG].")
@click.option("--classifier", type=click.Choice(["logistic", "mlp"]), default="logistic", show_default=True,
              help="logistic: L2 multinomial logistic regression (C swept); mlp: Dense 256 + ReLU + softmax, "
                   "RMSprop, early stopping.")
@click.option("--C", "C", type=float, default=None,
              help="Fix the inverse regularisation strength (scikit-learn's C) instead of sweeping it.")
@click.option("--cv", type=click.IntRange(2), default=None,
              help="Stratified K-fold cross-validation over the --test-split images (no training list needed).")
@click.option("--shots", default="1,2,5,10,20,all", show_default=True,
              help="Few-shot curve: training images per class (comma-separated, 'all'); '' for none.")
@click.option("--seeds", type=click.IntRange(1), default=3, show_default=True,
              help="Draws per few-shot point (mean ± std).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the splits and draws.")
@engine_options(32, backend_help="Used only for features not yet in the cache.", precision=False, trt=False,
                device_help="auto, cpu, cuda or cuda:N: feature extraction and the classifier's fit.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Feature cache folder, shared with baseline and retrieval "
                   "[default: $CROSSMODAL_CACHE, else <out>/cache].")
@fast_decode_option
@click.option("--export-model/--no-model", "export", default=None,
              help="Write the adjusted network (OUT/model/: IR + ONNX + Keras, one per training modality in a grid). "
                   "Default: yes for one probe, no for --all (a grid would write a full model per modality).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("probe-out"),
              show_default=True, help="Output folder: probe.json, probe.md, PNGs, per_class.csv, model/.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or notes.")
@json_option
@handle_errors
@locks_output("out_dir", "probe")
def probe(model_dir, modality, train_modality, all_pairs, data_root, config, train_split, test_split, layer,
          classifier, C, cv, shots, seeds, seed, backend, device, batch_size, workers, threads, cache_dir, fast_decode,
          export, out_dir, quiet, as_json):
    """Train a classifier on the frozen network's features of one modality's training images
    and score it on test images (the linear-probe protocol: C swept on a validation split carved
    from the training data, then refit on all of it), beside the unadjusted network's muted
    baseline and chance; few-shot curve; cross-modal transfer; the adjusted network written
    as a model folder (IR + ONNX + Keras) that baseline and verify read.

    \b
    Examples:
      crossmodal probe --model models/vgg16-pt --modality sketch --data-root /data/cmplaces --out runs/probe
      crossmodal probe --model models/vgg16-pt --modality sketch --train-modality natural ...
      crossmodal probe --model models/vgg16-pt --all --data-root /data/cmplaces --cache runs/cache
    """
    from crossmodal.evaluate.probe.job import run_probe

    quiet_all = quiet or as_json
    with ProgressBars(disable=quiet_all) as bars:
        run = run_probe(model_dir, modality, out_dir=out_dir, train_modality=train_modality, all_pairs=all_pairs,
                        data_root=data_root, config=config, train_split=train_split, test_split=test_split,
                        layer=layer, classifier=classifier, C=C, cv=cv, shots=shots, seeds=seeds, seed=seed,
                        backend=backend, device=device, batch_size=batch_size, workers=workers, threads=threads,
                        cache_dir=cache_dir, draft=fast_decode, export_model=(not all_pairs) if export is None else export,
                        on_step=step_printer(quiet_all), on_start=bars.start, on_batch=bars.update)
    if as_json:
        echo_json(run.results)
        return
    if run.results.get("banner"):
        click.echo(f"*** {run.results['banner'].upper()} ***")
    click.echo(f"weights: {run.results['weights']['description']}")
    for p in run.results["pairs"]:
        base = "–" if p["baseline_top1"] is None else f"{100 * p['baseline_top1']:.2f} %"
        click.echo(f"{p['train_modality']} → {p['modality']}: probe top-1 {100 * p['top1']:.2f} % "
                   f"[{100 * p['top1_ci'][0]:.1f}, {100 * p['top1_ci'][1]:.1f}], top-5 {100 * p['top5']:.2f} %, "
                   f"baseline {base}, chance {100 * p['chance_top1']:.2f} % — {p['num_train']} training, "
                   f"{p['num_test']} test images, {p['num_classes']} classes"
                   + ("" if p["C"] is None else f", C={p['C']:g}"))
    click.echo(f"→ {run.files['probe.json']}, {run.files['probe.md']}"
               + "".join(f", {m['dir']}" for m in run.results.get("models", {}).values()))
