"""``crossmodal convert``: a checkpoint, Caffe files or an IR folder → IR + Keras + ONNX."""
from __future__ import annotations

from pathlib import Path

import click

from crossmodal.cli.options import (
    csv_list,
    echo_json,
    handle_errors,
    input_size_option,
    json_option,
    locks_output,
    preprocess_options_from,
    source_preprocess_options,
    step_printer,
)


@click.command("convert")
@click.argument("weights", type=click.Path(exists=True, path_type=Path))
@click.option("--out-dir", "-o", required=True, type=click.Path(path_type=Path),
              help="Folder for model.json, weights.h5, model.keras, model.weights.h5, model.onnx.")
@click.option("--to", "targets", default="ir,keras,onnx", show_default=True,
              help="Comma-separated targets: ir, keras, onnx, torch (model.pth: a state dict in "
                   "today's torchvision key names).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Class names, lines '/a/airfield 0' (categories_places365.txt).")
@click.option("--io-labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Indoor/outdoor flags, lines 'name 1|2' (IO_places365.txt).")
@click.option("--preprocess", default=None,
              help="Preprocessing: torchvision, places365, caffe, a JSON file or JSON text. "
                   "Default: what the model card says for a known checkpoint, caffe for Caffe "
                   "models, an ONNX model's crossmodal metadata, else torchvision.")
@click.option("--caffemodel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Caffe weights, when WEIGHTS is a deploy .prototxt.")
@click.option("--mean-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Caffe mean image (.binaryproto), e.g. places365CNN_mean.binaryproto.")
@click.option("--mean-mode", type=click.Choice(["channel", "image"]), default="channel", show_default=True,
              help="Subtract the mean file's per-channel means or the full mean image.")
@click.option("--rgb-input", is_flag=True,
              help="Caffe only: fold BGR→RGB into conv1_1 so the emitted models take RGB.")
@click.option("--opset", type=int, default=None,
              help="ONNX opset (default 21): 13 up to the newest both the installed onnx and onnxruntime "
                   "support (an opset outside that range is refused with the range).")
@click.option("--onnx-outputs", default=None,
              help="Extra ONNX outputs after logits and prob (blob or layer names; 'none' for none). "
                   "Default: the network's feature blob (fc7 for VGG16).")
@input_size_option
@source_preprocess_options
@click.option("--arch", default=None,
              help="Architecture of a PyTorch checkpoint or a weights-only Keras .h5 (resnet18, wideresnet18, "
                   "densenet161, alexnet, vgg16, …); "
                   "default: inferred from the keys, wideresnet18 from the file name or the checkpoint's arch entry.")
@click.option("--trust-pickle", is_flag=True,
              help="Allow unpickling a whole pickled model. Runs code from the file: only for trusted files.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@json_option
@handle_errors
@locks_output("out_dir", "convert")
def convert(weights, out_dir, targets, labels, io_labels, preprocess, caffemodel, mean_file, mean_mode,
            rgb_input, opset, onnx_outputs, input_size, mean, std, scale, channel_order, resize, feature_layer,
            arch, trust_pickle, quiet, as_json):
    """Convert WEIGHTS (.pth/.pth.tar/.pt/.safetensors, a Caffe deploy .prototxt with
    --caffemodel, an .onnx model, a .keras / Keras .h5 model, or an IR folder) into the IR and
    Keras 3 / ONNX models."""
    from crossmodal.convert.pipeline import NO_LABELS_NOTE, SOURCE_NOTE
    from crossmodal.convert.pipeline import convert as run_convert
    from crossmodal.ir.identity import describe

    extra = (None if onnx_outputs is None else [] if onnx_outputs.strip().lower() == "none"
             else csv_list(onnx_outputs))
    options = dict(trust_pickle=trust_pickle, input_size=input_size, preprocess=preprocess)
    source_options = preprocess_options_from(None, mean, std, scale, channel_order, resize)
    if source_options.fields_given or feature_layer is not None:
        options.update(preprocess_options=source_options, feature_layer=feature_layer)
    if arch is not None:
        options["arch"] = arch
    if weights.suffix == ".prototxt":
        options.update(caffemodel=caffemodel, mean_file=mean_file, mean_mode=mean_mode, rgb_input=rgb_input)
    elif caffemodel or mean_file or rgb_input:
        raise click.UsageError("--caffemodel, --mean-file and --rgb-input go with a Caffe .prototxt")
    result = run_convert(weights, out_dir, targets=csv_list(targets), labels=labels, io_labels=io_labels,
                         opset=opset, onnx_outputs=extra, on_step=step_printer(quiet or as_json), **options)
    for note in result.model.graph.provenance.notes:  # what the reader assumed: said even under -q
        if note.startswith(SOURCE_NOTE):
            click.echo(f"note: {note[len(SOURCE_NOTE):]}", err=True)
    if result.model.graph.labels is None:  # said even under -q: every later report would name class_N
        click.echo("note: " + NO_LABELS_NOTE.format(n=result.model.graph.num_classes), err=True)
    if as_json:
        echo_json(result.to_json())
        return
    g = result.model.graph
    click.echo(f"{g.name}: {g.parameter_count():,} parameters, {g.num_classes} classes, "
               f"input {'×'.join(map(str, g.input.shape))} {g.preprocess.channel_order} "
               f"{g.preprocess.value_range} (preprocess: {g.preprocess.name})")
    click.echo(f"weights: {describe(g)}")
    for note in g.provenance.notes:
        if note.startswith("architecture"):
            click.echo(f"note: {note}")

    train_val = [n[len("train_val: "):] for n in g.provenance.notes if n.startswith("train_val: ")]
    if train_val:  # data, loss and accuracy layers dropped: said, not silent
        click.echo("note: a train_val prototxt, read for inference: " + "; ".join(train_val))
    for a in result.artifacts:
        click.echo(f"  {a.kind:<13} {a.path}  {a.bytes / 2**20:8.1f} MiB  sha256 {a.sha256[:16]}…")
    click.echo(f"done in {result.timings['total']:.1f} s")

