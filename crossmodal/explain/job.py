"""The ``explain`` and ``predict`` jobs over files and folders, streamed in batches.

Memory stays bounded whatever the number of images: one batch of images and maps
is held at a time; maps go straight into ``cams.npz`` (:class:`~.render.NpzWriter`),
overlays to PNG; only a row of text per image is kept for the gallery.

Output folder of :func:`run_explain`:

* ``cams.npz`` — per image, keyed by its file stem (``stem~2`` … for a repeated stem):
  float32 ``(H, W)`` (the input crop) for one class, ``(K, H, W)`` for ``--top K``;
* ``overlays/<key>__<class>.png`` — per image and class;
* ``explain.json`` — settings and, per image, path, key, classes, probabilities, PNGs;
  the files that did not decode, with the reason; the weights' identity (``weights``
  with its ``description``, ``banner``: the random-weights warning or null) and the
  ``run`` block (:class:`crossmodal.reports.runs.RunRecord`);
* ``explain.md`` — the gallery, under the banner and the weights' identity.

On random weights the banner also tops every overlay's title
(:func:`crossmodal.ir.identity.titled`).

The files are written into a staging folder inside the output folder and moved into
place only when the run succeeds (:func:`crossmodal.io.runs.staged`): a run that fails
or is interrupted leaves the folder as it was.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence


from crossmodal.ir import identity
from crossmodal.errors import InputError
from crossmodal.data.images import IMAGE_EXTENSIONS, list_images
from crossmodal.explain import render
from crossmodal.io.atomic import check_output_dir, write_text_atomic
from crossmodal.reports.runs import RunRecord
from crossmodal.reports.text import decoding, decoding_lines, decoding_title
from crossmodal.io.runs import staged, utc_now

Progress = Callable[[int, int], None]


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders listed recursively (sorted, image extensions only)."""
    if not inputs:
        raise InputError("give at least one image or folder")
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the folder", p)
            paths += found
        elif p.exists():
            paths.append(p)
        else:
            raise InputError("no such file or folder", p)
    return paths


def batches(paths: Sequence[Path], size: int) -> Iterable[list[Path]]:
    for i in range(0, len(paths), size):
        yield list(paths[i:i + size])


# --------------------------------------------------------------------------- predict
def run_predict(model, inputs: Sequence[str | os.PathLike], *, k: int = 5, attributes=None,
                batch_size: int = 32, on_progress: Progress | None = None,
                on_result: Callable[[dict], None] | None = None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Top-``k``, IO vote and attributes per image (see :meth:`crossmodal.api.Model.predict`),
    in batches; returns (results, failures ``(path, reason)``). Bad input is checked before
    any image is decoded; an image that does not decode is skipped and listed."""
    model.check_attributes(attributes)
    if k < 1:
        raise InputError(f"-k must be at least 1, not {k}")
    paths = collect_images(inputs)
    model.backend(["logits"] + ([model.feature_layer] if attributes is not None else []))  # a missing file fails here
    if on_progress:  # the bar starts when the work does
        on_progress(0, len(paths))
    results, failures = [], []
    done = 0
    for chunk in batches(paths, batch_size):
        batch = model.load(chunk, on_error="skip")
        failures += batch.failures
        for r in model.predict_batch(batch, k, attributes):
            results.append(r)
            if on_result:
                on_result(r)
        done += len(chunk)
        if on_progress:
            on_progress(done, len(paths))
    if not results:
        raise InputError(f"none of the {len(paths)} images decoded: "
                         + "; ".join(f"{p}: {r}" for p, r in failures[:3]))
    return results, failures


def title(label: str, prob: float) -> str:
    return f"{label}  (p = {prob:.3f})"


# --------------------------------------------------------------------------- explain
def run_explain(model, inputs: Sequence[str | os.PathLike], out_dir: Path, *, method: str = "auto",
                layer: str | None = None, class_name: str | None = None, top: int = 1, batch_size: int = 8,
                overlays: bool = True, on_progress: Progress | None = None,
                on_step: Callable[[str], None] | None = None) -> dict:
    """Maps for every image (see the module docstring for the files); returns the summary
    (also ``explain.json``). Bad input (unknown class, non-spatial layer, missing file,
    unwritable folder) is refused before anything is written."""
    step = on_step or (lambda msg: None)
    started = utc_now()
    out_dir = check_output_dir(Path(out_dir))
    if top < 1:
        raise InputError(f"--top must be at least 1, not {top}")
    classes = [model.class_index(class_name)] if class_name is not None else None
    paths = collect_images(inputs)
    method, chosen, head = model.explain_setup(method, layer)
    if identity.banner(model.graph):
        step(identity.banner(model.graph).upper())
    step(f"{method} on layer {chosen!r}" + (f" for class {model.labels[classes[0]]!r}" if classes
                                            else f" for the top-{top} class(es)") + f"; {len(paths)} images")
    labels = list(model.labels)
    weights = identity.identity(model.graph)
    record = RunRecord("explain", {"model_dir": str(model.model_dir), "out_dir": str(out_dir), "method": method,
                                   "layer": chosen, "class": class_name, "top": top, "batch_size": batch_size,
                                   "overlays": overlays, "num_inputs": len(paths)}, weights, started=started)
    if on_progress:  # the bar starts when the work does
        on_progress(0, len(paths))
    with staged(out_dir, "explain") as stage:  # all files or none: moved into --out when the run succeeds
        writer = render.NpzWriter(stage / "cams.npz")
        rows, failures, images, grid = [], [], 0, (0, 0)
        try:
            done = 0
            for chunk in batches(paths, batch_size):
                batch = model.load(chunk, on_error="skip")
                failures += batch.failures
                res = model.cam_batch(batch, classes, top, method, chosen, head)
                grid = res.grid if len(res.maps) else grid
                pictures = model.display(batch.x) if overlays and len(batch.x) else None
                for i, src in enumerate(res.sources):
                    key = writer.unique(Path(src).stem)
                    writer.add(key, res.maps[i, 0] if res.maps.shape[1] == 1 else res.maps[i])
                    for j in range(res.maps.shape[1]):
                        label, prob = labels[int(res.targets[i, j])], float(res.scores[i, j])
                        png = f"overlays/{render.safe_name(key)}__{render.safe_name(label)}.png"
                        if pictures is not None:
                            render.overlay_png(stage / png, pictures[i], res.maps[i, j],
                                               identity.titled(decoding_title(title(label, prob), model.draft),
                                                               weights))
                        rows.append({"path": src, "key": key, "rank": j + 1, "label": label,
                                     "index": int(res.targets[i, j]), "prob": prob,
                                     "png": png if pictures is not None else None})
                    images += 1
                done += len(chunk)
                if on_progress:
                    on_progress(done, len(paths))
            if images == 0:
                raise InputError(f"none of the {len(paths)} images decoded: "
                                 + "; ".join(f"{p}: {r}" for p, r in failures[:3]))
            writer.commit()
        finally:
            writer.close()
        summary = {"format": "crossmodal-explain", "model": str(model.model_dir),
                   "weights": {**weights, "description": identity.describe(weights)},
                   "banner": identity.banner(weights), "method": method, "layer": chosen,
                   "decoding": decoding(model.draft),
                   "grid": list(grid), "crop": list(model.input_size), "images": images,
                   "classes": "top-%d" % top if classes is None else labels[classes[0]],
                   "failed": [{"path": p, "reason": r} for p, r in failures], "maps": rows,
                   "files": {"cams.npz": "cams.npz", "explain.md": "explain.md"}, "run": record.block()}
        write_text_atomic(stage / "explain.json", json.dumps(summary, indent=1) + "\n")
        write_text_atomic(stage / "explain.md", render.gallery_markdown(
            {**summary, "weights_lines": [*identity.markdown_lines(model.graph), *decoding_lines(model.draft)]},
            rows, failures))
    return summary
