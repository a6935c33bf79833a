"""``crossmodal finetune``: train a converted network further on clip art and sketches (a new head up
to the whole network), resumable, data-parallel under torchrun; towers per modality; a search."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from crossmodal.cli.options import (
    csv_list,
    data_options,
    device_option,
    echo_json,
    handle_errors,
    json_option,
    label_map_option,
    locks_output,
    step_printer,
)


class Bars:
    """One tqdm bar per epoch on stderr (steps, steps/s)."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable

    def __call__(self, epoch: int, total: int, done: int):
        from tqdm import tqdm
        return tqdm(total=total + done, initial=done, unit="step", desc=f"epoch {epoch + 1}", file=sys.stderr,
                    disable=self.disable, dynamic_ncols=True, leave=False)


@click.command("finetune")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="A converted model folder (model.json + weights.h5).")
@click.option("--modality", required=True, help="Modality to train on; several comma-separated (clipart,sketch).")
@data_options(split=False, root_help="Folder with one sub-folder per modality, each with categories.txt, "
                                     "train.txt and val.txt.")
@click.option("--train-split", default="train", show_default=True)
@click.option("--val-split", default="val", show_default=True)
@click.option("--balance", type=click.Choice(["modality", "none"]), default="modality", show_default=True,
              help="Several modalities: draw each as often as the largest per epoch, or concatenate.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder: checkpoints/, history.csv, then model/, curves.png, finetune.json/.md.")
@click.option("--train-from", default="head", show_default=True,
              help="First layer that trains (everything above trains, below is frozen), or 'head'.")
@click.option("--unfreeze-at", type=int, default=None,
              help="Two stages: the head alone until this epoch, then from --train-from.")
@click.option("--base-lr-mult", type=float, default=1.0, show_default=True,
              help="Learning-rate multiplier of the layers below the head.")
@click.option("--head", type=click.Choice(["new", "keep"]), default="new", show_default=True,
              help="new: one row per category (warm-started from the mapped labels' rows); keep: the network's "
                   "head, targets mapped to its labels.")
@label_map_option
@click.option("--augment", type=click.Choice(["none", "light", "strong"]), default="light", show_default=True)
@click.option("--augment-preview", is_flag=True, help="Write augment_preview.png (16 augmented samples).")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True, help="Data-loader workers.")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Per rank.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw", "rmsprop"]), default="sgd", show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--label-smoothing", type=float, default=0.0, show_default=True)
@click.option("--sched", type=click.Choice(["cosine", "step", "none"]), default="cosine", show_default=True)
@click.option("--warmup-epochs", type=float, default=0.0, show_default=True)
@click.option("--step-every", type=int, default=None, help="--sched step: ×0.1 every N epochs [a third of the run].")
@click.option("--clip-grad", type=float, default=None, help="Clip the gradients' global norm to this.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Autocast (fp16: with loss scaling); channels-last on a GPU.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the training module.")
@click.option("--patience", type=int, default=None, help="Early stopping: epochs without a better val top-1.")
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which epoch's weights are exported.")
@click.option("--save-every", type=int, default=None, help="Also checkpoint every N steps.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly (only --epochs may grow).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option()
@click.option("--to", "targets", default="ir,onnx,keras", show_default=True,
              help="Exported formats (ir always; torch adds model.pth).")
@click.option("--no-tensorboard", is_flag=True, help="No TensorBoard scalars (OUT/tb/).")
@click.option("--towers", type=click.Choice(["shared", "per-modality"]), default="shared", show_default=True,
              help="per-modality: each modality its own layers below --shared-from, one shared top.")
@click.option("--shared-from", default=None, help="Towers: the first layer the modalities share (≤ the feature layer).")
@click.option("--freeze-shared", is_flag=True, help="Towers: keep the shared layers below the head as the base has them.")
@click.option("--against", type=click.Path(path_type=Path), help="Another fine-tune run to compare with (finetune.md).")
@click.option("--search", "search_trials", type=click.IntRange(1), default=None,
              help="Try N settings with Optuna (lr, weight decay, --search-train-from, label smoothing).")
@click.option("--search-epochs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--search-sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True)
@click.option("--search-lr", default="1e-5,1e-1", show_default=True, help="Log-uniform learning-rate range.")
@click.option("--search-train-from", default=None, help="Layers to choose --train-from among [--train-from].")
@click.option("--quiet", "-q", is_flag=True)
@json_option
@handle_errors
@locks_output("out_dir", "finetune", when=lambda kw: os.environ.get("RANK", "0") == "0")
def finetune(model_dir, modality, data_root, config, train_split, val_split, balance, out_dir, train_from, unfreeze_at,
             base_lr_mult, head, label_map, augment, augment_preview, workers, epochs, batch_size, lr, optimizer,
             weight_decay, label_smoothing, sched, warmup_epochs, step_every, clip_grad, precision, compile_, patience,
             keep, save_every, resume, seed, device, targets, no_tensorboard, towers, shared_from, freeze_shared,
             against, search_trials, search_epochs, search_sampler, search_lr, search_train_from, quiet, as_json):
    """Fine-tune a converted network on a modality's training images and export it as a model
    folder (IR + ONNX + Keras) that every other command reads.

    \b
    Examples:
      crossmodal finetune --model models/vgg16-pt --modality sketch --data-root /data/cmplaces \\
          --out runs/ft-sketch --train-from conv5_1 --unfreeze-at 5 --epochs 30 --augment light
      torchrun --nproc-per-node 4 -m crossmodal finetune --model ... --out runs/ft --batch-size 64
      crossmodal finetune ... --modality clipart,sketch --towers per-modality --shared-from fc6 --train-from conv5_1
      crossmodal finetune ... --search 20 --search-epochs 3 --search-train-from fc6,conv5_1
    """
    from crossmodal.evaluate.finetune.job import run_finetune
    from crossmodal.evaluate.finetune.settings import Settings

    s = Settings(model_dir=str(model_dir), modalities=csv_list(modality), out_dir=str(out_dir),
                 data_root=None if data_root is None else str(data_root), config=None if config is None else str(config),
                 train_split=train_split, val_split=val_split, balance=balance, train_from=train_from,
                 unfreeze_at=unfreeze_at, base_lr_mult=base_lr_mult, head=head,
                 label_map=None if label_map is None else str(label_map), augment=augment, epochs=epochs,
                 batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                 label_smoothing=label_smoothing, sched=sched, warmup_epochs=warmup_epochs, step_every=step_every,
                 clip_grad=clip_grad, precision=precision, compile=compile_, patience=patience, keep=keep, seed=seed,
                 towers=towers, shared_from=shared_from, freeze_shared=freeze_shared, workers=workers,
                 to=csv_list(targets), save_every=save_every, device=device, tensorboard=not no_tensorboard,
                 augment_preview=augment_preview)
    search = None
    if search_trials is not None:
        from crossmodal.evaluate.finetune.search import SearchSettings
        search = SearchSettings.parse(search_trials, search_epochs, search_sampler, search_lr,
                                      search_train_from or train_from)
    quiet_all = quiet or as_json
    run = run_finetune(s, resume=resume, against=against, search=search, on_step=step_printer(quiet_all),
                       progress=None if quiet_all else Bars(False))
    if not run.results:  # a rank other than 0 under torchrun
        return
    r = run.results
    if as_json:
        echo_json(r)
        return
    if r.get("banner"):
        click.echo(f"*** {r['banner'].upper()} ***")
    base = "–" if r["baseline_top1"] is None else f"{100 * r['baseline_top1']:.2f} %"
    click.echo(f"val top-1 {100 * r['val_top1']:.2f} %, top-5 {100 * r['val_top5']:.2f} % (epoch {r['exported_epoch']} "
               f"of {r['epochs_run']}); epoch 0 {100 * r['epoch0_top1']:.2f} %, unadjusted (muted) {base}, chance "
               f"{100 * r['chance_top1']:.2f} %")
    for m, v in r["per_modality"].items() if len(r["per_modality"]) > 1 else ():
        click.echo(f"  {m}: top-1 {100 * v['val_top1']:.2f} %, top-5 {100 * v['val_top5']:.2f} %")
    if r.get("search"):
        click.echo(f"best trial {r['search']['best_trial']}: {r['search']['command']}")
    click.echo("→ " + ", ".join(str(p) for p in run.files.values()))
