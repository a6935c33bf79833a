"""Options and error handling shared by the commands."""
from __future__ import annotations

import functools
import json
import sys
from typing import Callable

import click

from crossmodal.errors import CrossmodalError


def handle_errors(fn: Callable) -> Callable:
    """Turn library errors into one line on stderr and the error's exit code (2: bad input)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CrossmodalError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
    return wrapper


def locks_output(param: str, command: str, *, when: Callable[[dict], bool] | None = None,
                 central: bool = False) -> Callable:
    """Hold the lock of the folder given as ``param`` for the whole command: one run per output
    folder (:func:`crossmodal.io.locks.output_lock`; ``central``: the lock in the user's cache);
    ``when(kwargs)`` False skips it (a folder the run does not write, a torchrun rank other than 0).
    Goes under :func:`handle_errors`."""
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            folder = kwargs.get(param)
            if folder is None or (when is not None and not when(kwargs)):
                return fn(*args, **kwargs)
            from crossmodal.io.locks import output_lock
            with output_lock(folder, command, central=central):
                return fn(*args, **kwargs)
        return wrapper
    return decorate


LABEL_MAP_HELP = (
    "A CSV mapping data set categories to the network's labels, adding to or overriding the packaged "
    "alias table. Header `target_category,source_label,note`, then one row per category, e.g. "
    "`temple_east_asia,/t/temple/asia,` (replace the automatic match), `kitchenette,,no counterpart` "
    "(none: the category is unmapped), `coast,+n09428293 seashore|/c/coast,` (a leading + adds labels to "
    "the automatic matches; | separates several). A prediction of any of a category's labels is correct.")


def label_map_option(fn: Callable) -> Callable:
    """``--label-map FILE``: the alias CSV, its format spelled out in ``--help``."""
    from pathlib import Path
    return click.option("--label-map", type=click.Path(path_type=Path), help=LABEL_MAP_HELP)(fn)


def device_option(default: str = "auto", help: str = "auto (a GPU when one really works), cpu, cuda or cuda:N."):
    """``--device``, shared by every command that runs a model."""
    return click.option("--device", default=default, show_default=True, help=help)


def batch_size_option(default: int = 32, help: str | None = None):
    """``--batch-size N`` (at least 1)."""
    return click.option("--batch-size", type=click.IntRange(1), default=default, show_default=True, help=help)


def threads_option(fn: Callable) -> Callable:
    """``--threads N``: inference threads on the CPU."""
    return click.option("--threads", type=click.IntRange(1), default=None,
                        help="Inference threads on the CPU (ONNX Runtime intra-op, torch, TF) "
                             "[default: the framework's].")(fn)


def workers_option(fn: Callable) -> Callable:
    """``--workers N``: image-decoding threads."""
    return click.option("--workers", type=click.IntRange(1), default=None,
                        help="Image-decoding threads [default: min(8, cores − 1)].")(fn)


def fast_decode_option(fn: Callable) -> Callable:
    """``--fast-decode``: JPEG draft decoding, an opt-in speed option (the default is the reference)."""
    return click.option("--fast-decode", is_flag=True,
                        help="Decode JPEGs in PIL's draft mode (reduced-size DCT before the resize): faster, but "
                             "not the reference preprocessing; every report and chart title says so.")(fn)


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(fn)


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def parse_size(value: str | None) -> tuple[int, int] | None:
    """``224`` or ``20x28`` → (H, W)."""
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().split("x")]
    except ValueError:
        raise click.BadParameter(f"expected H or HxW, got {value!r}") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise click.BadParameter(f"expected H or HxW, got {value!r}")
    return parts[0], parts[1]


def input_size_option(fn: Callable) -> Callable:
    """``--input-size H`` or ``HxW`` → ``(H, W)`` or None, for networks whose fc6 does not reveal it."""
    return click.option("--input-size", default=None, callback=lambda ctx, param, value: parse_size(value),
                        help="Input H or HxW, for networks whose fc6 does not reveal it (non-square maps).")(fn)


def csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def step_printer(quiet: bool = False) -> Callable[[str], None]:
    return (lambda msg: None) if quiet else (lambda msg: click.echo(f"· {msg}", err=True))


class ProgressBars:
    """One tqdm bar per data set on stderr (counts, images/s, ETA), for the evaluation commands.

    ``start(name, done, total)`` and ``update(name, done, total)`` match the
    ``on_start`` / ``on_batch`` callbacks of the evaluation jobs; a bar closes when
    it reaches its total, and :meth:`close` (or leaving the ``with`` block) closes the rest.
    """

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self.bars: dict = {}

    def start(self, name: str, done: int, total: int) -> None:
        from tqdm import tqdm
        self.bars[name] = tqdm(total=total, initial=done, unit="img", desc=name, file=sys.stderr,
                               disable=self.disable, dynamic_ncols=True)

    def update(self, name: str, done: int, total: int) -> None:
        bar = self.bars[name]
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()

    def __enter__(self) -> "ProgressBars":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def precision_option(fn: Callable) -> Callable:
    """``--precision fp32|fp16|bf16`` (shared by the commands that run a network)."""
    return click.option(
        "--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True,
        help="Arithmetic of the network: fp16 = model.fp16.onnx (made once from model.onnx, cached beside "
             "it) on ONNX Runtime, torch.autocast, Keras mixed_float16; bf16 = torch autocast / "
             "Keras mixed_bfloat16 (not ONNX Runtime).")(fn)


def trt_option(fn: Callable) -> Callable:
    """``--trt``: ONNX Runtime's TensorRT execution provider first (GPU only)."""
    return click.option(
        "--trt", is_flag=True,
        help="ONNX Runtime on a GPU: TensorRT execution provider first (fp16 kernels with --precision fp16), "
             "engines cached in the cache folder (trt/); the first run builds them (minutes).")(fn)


def _stack(*decorators: Callable) -> Callable[[Callable], Callable]:
    """Apply ``decorators`` so that ``--help`` lists their options in the order given."""
    def apply(fn: Callable) -> Callable:
        for decorate in reversed(decorators):
            fn = decorate(fn)
        return fn
    return apply


DATA_ROOT_HELP = "Folder with one sub-folder per modality (<root>/<modality>/)."


def data_options(split: bool = True, root_help: str = DATA_ROOT_HELP) -> Callable[[Callable], Callable]:
    """``--data-root``, ``--config`` and (``split``) ``--split``: where a command finds its modalities."""
    from pathlib import Path
    options = [click.option("--data-root", type=click.Path(path_type=Path), help=root_help),
               click.option("--config", type=click.Path(path_type=Path),
                            help="crossmodal.toml with [modalities.*] entries "
                                 "(default ./crossmodal.toml when present).")]
    if split:
        options.append(click.option("--split", default="val", show_default=True,
                                    help="Which list of the config / convention to use."))
    return _stack(*options)


BACKEND_HELP = "onnx: ONNX Runtime (CUDA with I/O binding on a GPU); keras: TensorFlow; torch: PyTorch."


def engine_options(batch_size: int = 32, *, backend_help: str = BACKEND_HELP, device_help: str | None = None,
                   precision: bool = True, trt: bool = True, workers: bool = True) -> Callable[[Callable], Callable]:
    """``--backend``, ``--device``, (``--precision``, ``--trt``,) ``--batch-size``, (``--workers``,)
    ``--threads``: how a command runs the network over its images."""
    options = [click.option("--backend", type=click.Choice(["onnx", "keras", "torch"]), default="onnx",
                            show_default=True, help=backend_help),
               device_option(help=device_help) if device_help else device_option()]
    options += [precision_option] if precision else []
    options += [trt_option] if trt else []
    options += [batch_size_option(batch_size)]
    options += [workers_option] if workers else []
    options += [threads_option]
    return _stack(*options)


def source_preprocess_options(fn: Callable) -> Callable:
    """``--mean``, ``--std``, ``--scale``, ``--channel-order``, ``--resize`` and ``--feature-layer``:
    what a source that carries no preprocessing (ONNX, Keras) needs; read them with
    :func:`preprocess_options_from` (the values stay text until then)."""
    options = [
        click.option("--mean", default=None, help="Sources without preprocessing (ONNX): per-channel mean, "
                                                   "'0.485,0.456,0.406' (in the --scale units, --channel-order order)."),
        click.option("--std", default=None, help="Sources without preprocessing (ONNX): per-channel std."),
        click.option("--scale", type=click.Choice(["1", "255"]), default=None,
                     help="Sources without preprocessing (ONNX): pixel values the network takes, 0-1 (1) or 0-255 (255)."),
        click.option("--channel-order", type=click.Choice(["RGB", "BGR"]), default=None,
                     help="Sources without preprocessing (ONNX): channel order of the input."),
        click.option("--resize", default=None,
                     help="Sources without preprocessing (ONNX): resize before the centre crop, S (shorter side) or HxW."),
        click.option("--feature-layer", default=None,
                     help="Sources without blob names (ONNX): the layer, node or tensor whose output is the feature "
                          "blob [default: the input of the last dense layer]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def preprocess_options_from(preprocess: str | None, mean: str | None, std: str | None, scale: str | None,
                            channel_order: str | None, resize: str | None):
    """The :class:`~crossmodal.convert.preprocess_options.PreprocessOptions` of the command line."""
    from crossmodal.convert.preprocess_options import PreprocessOptions
    return PreprocessOptions.parse(preset=preprocess, mean=mean, std=std, scale=None if scale is None else float(scale),
                                   channel_order=channel_order, resize=resize)
