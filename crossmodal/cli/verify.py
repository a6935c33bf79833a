"""``crossmodal verify``: layer-by-layer equivalence across engines, with a CI exit code."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from crossmodal.cli.options import csv_list, handle_errors, json_option, precision_option, step_printer
from crossmodal.io.atomic import write_text_atomic


@click.command("verify")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--source", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The original checkpoint (or .caffemodel with --prototxt, or the source .onnx on ONNX Runtime): the reference engine, "
                   "loaded independently of the conversion (plain torchvision VGG; Caffe's BGR net). "
                   "Must be the file the IR was made from (checked by SHA-256).")
@click.option("--prototxt", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Caffe deploy prototxt, when --source is a .caffemodel.")
@click.option("--engines", default="torch,ir,keras,onnx", show_default=True,
              help="Comma-separated: torch (the IR in PyTorch), ir, keras, onnx, tf2onnx (optional "
                   "cross-check; its failures are reported, not fatal).")
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A folder of JPEG/PNG images to feed (else random images).")
@click.option("--random", "n_random", type=click.IntRange(1), default=None,
              help="Number of random images (default 2); not with --images.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=2, show_default=True)
@click.option("--layers", default="all", show_default=True,
              help="'all' or comma-separated layer/blob names (fc7, prob, pool5, conv5_3, …); "
                   "logits and the network's feature blob (fc7, pool5) are always compared.")
@click.option("--tolerance", type=float, default=None,
              help="Limit on max|Δ|/max|ref| for logits and the feature blob [default: 1e-5; 1e-2 with --precision fp16/bf16].")
@click.option("--max-top1-disagreements", type=click.IntRange(0), default=None,
              help="How many inputs may get a different top-1 class than the reference [default: 0; with "
                   "--precision fp16/bf16, 1 % of the inputs (top-1 agreement ≥ 99 %)].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (GPU if it works).")
@click.option("--allow-tf32", is_flag=True, help="Leave TF32 math on (reported; off by default).")
@precision_option
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where model.fp16.onnx goes when the model folder is read-only [default: $CROSSMODAL_CACHE, "
                   "else ~/.cache/crossmodal].")
@click.option("--trust-pickle", is_flag=True, help="Allow a pickled whole-model --source (trusted files only).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON report here.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the Markdown report here.")
@click.option("--quiet", "-q", is_flag=True)
@json_option
@handle_errors
def verify(model_dir, source, prototxt, engines, images, n_random, seed, batch_size, layers, tolerance,
           max_top1_disagreements, device, allow_tf32, precision, cache_dir, trust_pickle, report_path,
           markdown_path, quiet, as_json):
    """Prove that the models in MODEL_DIR compute the source network's function, layer by
    layer, on every engine. Exit 0 when every gate holds, 1 when one fails, 2 on bad input.

    With --precision fp16 (or bf16) the engines run at reduced precision against the
    full-precision reference, gated at max|Δ|/max|ref| ≤ 1e-2 on logits and fc7 and top-1
    agreement ≥ 99 %; the report shows per layer where the error grows."""
    from tqdm import tqdm

    from crossmodal.verify.job import run_verify
    from crossmodal.verify.report import console, markdown

    if images is not None and n_random is not None:
        raise click.UsageError("--images and --random are mutually exclusive: give one kind of input")
    n_random = 2 if n_random is None else n_random
    total = None if images else n_random
    with tqdm(total=total, unit="img", desc="verify", disable=quiet or as_json, file=sys.stderr) as bar:
        report = run_verify(model_dir, engines=csv_list(engines), source=source, prototxt=prototxt,
                            images=images, random=n_random, seed=seed, batch_size=batch_size,
                            layers=csv_list(layers), tolerance=tolerance,
                            max_top1_disagreements=max_top1_disagreements, device=device,
                            allow_tf32=allow_tf32, trust_pickle=trust_pickle, precision=precision,
                            cache_dir=cache_dir,
                            on_step=step_printer(quiet or as_json), on_batch=bar.update)
    data = report.to_json()
    if report_path:
        write_text_atomic(report_path, json.dumps(data, indent=2))
    if markdown_path:
        write_text_atomic(markdown_path, markdown(report))
    click.echo(json.dumps(data, indent=2) if as_json else console(report))
    sys.exit(0 if report.passed else 1)
