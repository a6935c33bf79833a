"""``crossmodal units``: what each unit of a layer responds to, in every modality."""
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


@click.command("units")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="A converted model folder (model.json + weights.h5, model.onnx / model.keras).")
@click.option("--modality", required=True, help="natural, clipart, sketch (comma-separated: one row each).")
@data_options()
@click.option("--images", type=click.Path(path_type=Path), help="Images root of a single modality.")
@click.option("--list", "list_file", type=click.Path(path_type=Path), help="List file of 'path label' lines.")
@click.option("--categories", type=click.Path(path_type=Path), help="Categories file ('name index' lines).")
@click.option("--layer", default=None,
              help="A layer with a spatial map [default: the map a global-average-pooling head pools, else the "
                   "last spatial ReLU, as Grad-CAM: VGG16 relu5_3].")
@click.option("--units", "units_", default=None, help="Units to study, e.g. 0-63,100 [default: every unit].")
@click.option("--top", type=click.IntRange(1), default=8, show_default=True, help="Top-K images per unit and modality.")
@click.option("--draw", default="auto", show_default=True,
              help="Unit galleries: auto (the 32 most and the 32 least agreeing), all, none, or units (0-9,42).")
@click.option("--maximize", default=None, help="Activation maximisation of these units (e.g. 3,17).")
@click.option("--from", "from_image", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --maximize: start from this image instead of noise (the amplified-dream variant).")
@click.option("--steps", type=click.IntRange(1), default=64, show_default=True, help="Maximisation: steps.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=4.0, show_default=True,
              help="Maximisation: step size in grey levels of a 0-255 image (the gradient normalised by its "
                   "mean |g|).")
@click.option("--decay", type=click.FloatRange(0, 1), default=1e-3, show_default=True, help="Maximisation: L2 decay.")
@click.option("--blur", type=click.FloatRange(0), default=0.5, show_default=True,
              help="Maximisation: Gaussian blur sigma (px) every 4 steps (0: none).")
@click.option("--jitter", type=click.IntRange(0), default=8, show_default=True,
              help="Maximisation: random shift (px), capped at an eighth of the unit's receptive field.")
@click.option("--seed", type=int, default=0, show_default=True, help="Maximisation: seed of the noise and shifts.")
@click.option("--chance-rounds", type=click.IntRange(0), default=100, show_default=True,
              help="Rounds of shuffled categories for the chance level.")
@click.option("--against", type=click.Path(path_type=Path), default=None,
              help="An earlier units run (folder or units.json): its summary beside this one (e.g. the "
                   "unadjusted network against a fine-tuned one).")
@engine_options(32, backend_help="Engine of the pass (maximisation always runs on the torch module).", trt=False)
@click.option("--limit", type=click.IntRange(1), default=None,
              help="At most N images per modality, evenly spaced over the list (a quick look).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: units.json, units.md, agreement.png, overview.png, units/, maximized/.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Cache folder for each image's unit maxima [default: $CROSSMODAL_CACHE, else <out>/cache]; "
                   "an interrupted pass resumes from it.")
@fast_decode_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or notes.")
@json_option
@handle_errors
@locks_output("out_dir", "units")
def units(model_dir, modality, data_root, config, split, images, list_file, categories, layer, units_, top, draw,
          maximize, from_image, steps, lr, decay, blur, jitter, seed, chance_rounds, against, backend, device,
          precision, batch_size, workers, threads, limit, out_dir, cache_dir, fast_decode, quiet, as_json):
    """What each unit of a layer responds to in every modality: its top-K images with the receptive
    field of its maximum, whether its top images share one category across modalities (against
    chance), and what input it wants (activation maximisation).

    \b
    Example:
      crossmodal units --model models/vgg16-pt --data-root /data/cmplaces \\
          --modality natural,clipart,sketch --layer relu5_3 --top 8 --out runs/units
    """
    from crossmodal.errors import InputError
    from crossmodal.evaluate.units.job import run_units
    from crossmodal.evaluate.units.maximize import Settings

    if from_image is not None and not maximize:
        raise InputError("--from is the starting image of --maximize: give --maximize UNITS too")
    quiet_all = quiet or as_json
    data = {"data_root": data_root, "config": config, "split": split, "images": images, "list_file": list_file,
            "categories": categories}
    with ProgressBars(disable=quiet_all) as bars:
        s = run_units(model_dir, modality, out_dir=out_dir, layer=layer, units=units_, top=top, draw=draw,
                      maximize=maximize, from_image=from_image,
                      max_settings=Settings(steps=steps, lr=lr, decay=decay, blur=blur, jitter=jitter, seed=seed),
                      backend=backend, device=device, precision=precision, batch_size=batch_size, workers=workers,
                      threads=threads, limit=limit, cache_dir=cache_dir, draft=fast_decode,
                      chance_rounds=chance_rounds, against=against, data=data, on_step=step_printer(quiet_all),
                      on_start=bars.start, on_batch=bars.update)
    if as_json:
        echo_json({k: v for k, v in s.items() if k != "units"})
        return
    if s.get("banner"):
        click.echo(f"*** {s['banner'].upper()} ***")
    sm, ch, rf = s["summary"], s["summary"]["chance"], s["receptive_field"]
    click.echo(f"weights: {s['weights']['description']}")
    click.echo(f"{s['layer']}: receptive field {rf['size']} px, stride {rf['stride']}; "
               f"{sm['consistent']}/{sm['units']} units with one concept in every modality"
               + ("" if ch["consistent_mean"] is None else f" (chance {ch['consistent_mean']:.1f}, "
                                                           f"p = {ch['consistent_p']:.3g})")
               + f" → {out_dir / 'units.md'}")
