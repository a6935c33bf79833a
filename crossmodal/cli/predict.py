"""``crossmodal predict``: top-k scenes, indoor/outdoor and scene attributes per image."""
from __future__ import annotations

from pathlib import Path

import click

from crossmodal.cli.explain import Progress
from crossmodal.cli.options import (
    echo_json,
    engine_options,
    fast_decode_option,
    handle_errors,
    json_option,
    locks_output,
)


@click.command("predict")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="A converted model folder (model.json + weights.h5, model.onnx / model.keras).")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-k", "k", type=click.IntRange(1), default=5, show_default=True, help="How many classes per image.")
@click.option("--attributes", "attributes_path", type=click.Path(path_type=Path),
              help="Scene-attribute matrix (A × F .npy, e.g. W_sceneattribute_wideresnet18.npy): W · features, "
                   "top 9. F must be the width of the features feeding the last dense layer.")
@click.option("--attribute-names", type=click.Path(path_type=Path),
              help="One attribute name per row of --attributes (labels_sunattribute.txt).")
@click.option("--cam", is_flag=True, help="Also write each image's map and overlay for its top-1 class "
                                           "(explain's default method and files) into --out.")
@click.option("--out", "cam_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("predict-cam"),
              show_default=True, help="Folder for --cam: cams.npz, overlays/, explain.md.")
@engine_options(32, precision=False, trt=False, workers=False)
@fast_decode_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
@handle_errors
@locks_output("cam_dir", "predict", when=lambda kw: bool(kw.get("cam")))
def predict(model_dir, inputs, k, attributes_path, attribute_names, cam, cam_dir, backend, device, batch_size, threads,
            fast_decode, quiet, as_json):
    """Classify images (files or folders): the top-k scenes with probabilities, the
    indoor/outdoor vote when the model carries IO labels, and SUN scene attributes with
    --attributes. Images that do not decode are skipped, counted and listed.

    On random weights a banner saying so goes to stderr before the first result. --json
    prints a list with one object per image; each carries "weights" (the weights'
    identity and its description) and "banner" (the random-weights warning, or null).

    \b
    Example:
      crossmodal predict --model models/vgg16-pt photo.jpg sketches/ -k 5
    """
    from crossmodal.api import IO_RULE, load_attributes, load_model
    from crossmodal.errors import InputError
    from crossmodal.explain.job import run_explain, run_predict

    if (attributes_path is None) != (attribute_names is None):
        raise InputError("--attributes and --attribute-names go together")
    attrs = load_attributes(attributes_path, attribute_names) if attributes_path else None
    model = load_model(model_dir, backend=backend, device=device, threads=threads, draft=fast_decode)
    model.check_attributes(attrs)
    if cam:
        from crossmodal.io.atomic import check_output_dir
        check_output_dir(cam_dir)
        model.explain_setup()  # refuse a model that cannot be explained before any work
    from crossmodal.ir import identity
    from crossmodal.reports.text import decoding
    weights = identity.identity(model.graph)
    bar = Progress("predict", disable=quiet or as_json)
    announced = []

    def progress(done, total):
        if not announced:  # once the input has passed its checks
            announced.append(True)
            if identity.banner(weights):
                click.echo(f"*** {identity.banner(weights).upper()} ***", err=True)
            if fast_decode:
                click.echo(f"decoding: {decoding(True)}", err=True)
        bar.update(done, total)

    def show(r):
        if as_json:
            return
        lines = [r["path"]] + [f"  {t['prob']:.3f} -> {t['label']}" for t in r["top"]]
        if r["io"]:
            lines.append(f"  environment: {r['io']} (mean IO label {r['io_mean']:.2f})")
        if r["attributes"]:
            lines.append("  attributes: " + ", ".join(a["label"] for a in r["attributes"]))
        bar.write("\n".join(lines))

    try:
        with model:
            results, failures = run_predict(model, inputs, k=k, attributes=attrs, batch_size=batch_size,
                                            on_progress=progress, on_result=show)
            bar.close()
            if cam:
                model.close_backend()
                run_explain(model, [r["path"] for r in results], cam_dir, top=1, batch_size=min(batch_size, 8))
    finally:
        bar.close()
    if as_json:
        described = {**weights, "description": identity.describe(weights)}
        echo_json([{**r, "weights": described, "banner": identity.banner(weights), "decoding": decoding(fast_decode)}
                   for r in results])
    else:
        if model.io_labels:
            click.echo(f"indoor/outdoor rule: {IO_RULE}")
        if cam:
            click.echo(f"maps: {cam_dir / 'explain.md'}")
    if failures:
        click.echo(f"{len(failures)} image(s) skipped (did not decode):", err=True)
        for p, reason in failures:
            click.echo(f"  {p}: {reason}", err=True)
