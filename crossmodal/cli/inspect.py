"""``crossmodal inspect``: a layer table of any model file the toolkit reads."""
from __future__ import annotations

from pathlib import Path

import click

from crossmodal.cli.options import echo_json, handle_errors, input_size_option, json_option


@click.command("inspect")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--caffemodel", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Caffe weights, when PATH is a deploy .prototxt.")
@input_size_option
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling a whole pickled model (trusted files only).")
@json_option
@handle_errors
def inspect_cmd(path, caffemodel, input_size, trust_pickle, as_json):
    """Show the layers, output shapes, parameter counts, input, preprocessing and labels
    of PATH: an IR folder, a checkpoint, a Caffe .prototxt, an .onnx or a .keras file."""
    from crossmodal.convert.summary import summarize
    from crossmodal.ir.identity import banner

    options = {}
    if path.suffix == ".prototxt":
        options["caffemodel"] = caffemodel
    elif path.suffix not in (".onnx", ".keras"):
        options.update(trust_pickle=trust_pickle, input_size=input_size)
    s = summarize(path, **options)
    if as_json:
        echo_json(s.to_json())
        return
    if s.weights and banner(s.weights):
        click.echo(f"*** {banner(s.weights).upper()} ***")
    click.echo(f"{s.path} ({s.format})")
    if s.weights_description:
        click.echo(f"weights: {s.weights_description}")
    width = max([22, *(len(r.name) for r in s.layers)])
    click.echo(f"{'layer':<{width}} {'kind':<17} {'output shape':<18} {'parameters':>12}  dag")
    previous = "input"
    for r in s.layers:
        shape = "×".join(str(d) for d in r.output_shape)
        dag = []
        if r.inputs and r.inputs != [previous]:  # not simply the row above: say where it reads from
            dag.append(("merge ← " if len(r.inputs) > 1 else "← ") + ", ".join(r.inputs))
        if r.readers > 1:
            dag.append(f"branch → {r.readers} readers")
        click.echo(f"{r.name:<{width}} {r.kind:<17} {shape:<18} {r.parameters:>12,}  {'; '.join(dag)}".rstrip())
        previous = r.name
    stats = (f" (learned {s.parameters - s.statistics:,} + BatchNorm statistics {s.statistics:,})"
             if s.statistics else "")
    click.echo(f"total parameters: {s.parameters:,}{stats}; {len(s.layers)} layers")
    click.echo(f"input: {s.input}")
    if s.outputs:
        click.echo("outputs: " + ", ".join(n if s.output_layers.get(n, n) == n else f"{n} (layer {s.output_layers[n]})"
                                           for n in s.outputs))
    if s.preprocess:
        click.echo(f"preprocess: {s.preprocess}")
    click.echo(f"labels: {s.labels if s.labels else 'none (convert with --labels categories_places365.txt)'}")
    for note in s.notes:
        click.echo(f"note: {note}")

