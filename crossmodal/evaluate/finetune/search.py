"""``--search N``: random search (Bergstra & Bengio 2012) or TPE over the learning rate (log-uniform),
the weight decay (log-uniform), ``--train-from`` (among ``--search-train-from``) and label smoothing,
with Optuna; each trial trains ``--search-epochs`` epochs and reports its val top-1 after each epoch to
a median pruner (it stops a trial whose val top-1 is below the median of the earlier trials at the same
epoch, once :data:`PRUNER_STARTUP` trials have finished: a small search must not prune from its
first trials).

The study lives in ``OUT/search.db`` (SQLite) with heartbeats: a search killed mid-trial and started
again with the same command resumes — finished and pruned trials are kept, not repeated; the trial that
was running is marked failed when the search starts again (one search per folder: the folder's lock) or,
beside a live search, once its heartbeat is stale, and is re-run with the same settings
(``RetryHeartbeatStaleTrialCallback``). The best trial's weights are kept in ``OUT/search/best.pt`` as trials
finish, and that trial's run is the one exported. Search trials write no checkpoints of their own.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from crossmodal.errors import InputError
from crossmodal.evaluate.finetune import checkpoint
from crossmodal.evaluate.finetune.settings import Settings

#: finished trials before the median pruner may stop one
PRUNER_STARTUP = 2
#: heartbeat interval and grace period of running trials, seconds ($CROSSMODAL_SEARCH_HEARTBEAT="5,30")
HEARTBEAT = (5, 30)
WEIGHT_DECAY = (1e-6, 1e-2)
LABEL_SMOOTHING = (0.0, 0.2)


@dataclass
class SearchSettings:
    trials: int
    epochs: int
    sampler: str
    lr: tuple[float, float]
    train_from: list[str]

    @classmethod
    def parse(cls, trials: int, epochs: int, sampler: str, lr: str, train_from: str) -> "SearchSettings":
        try:
            lo, hi = (float(v) for v in lr.split(","))
        except ValueError:
            raise InputError(f"--search-lr takes LOW,HIGH (e.g. 1e-5,1e-1), not {lr!r}") from None
        if not 0 < lo < hi:
            raise InputError(f"--search-lr needs 0 < LOW < HIGH, not {lr!r}")
        return cls(trials, epochs, sampler, (lo, hi), [v.strip() for v in train_from.split(",") if v.strip()])

    def check(self, s: Settings) -> None:
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
            raise InputError("--search runs in one process (run it without torchrun; train the best setting with it)")
        if s.towers != "shared":
            raise InputError("--search tunes a --towers shared run")


def heartbeat() -> tuple[int, int]:
    raw = os.environ.get("CROSSMODAL_SEARCH_HEARTBEAT")
    if raw:
        a, b = (int(v) for v in raw.split(","))
        return a, b
    return HEARTBEAT


def open_study(out_dir: Path, ss: SearchSettings, seed: int, frozen: dict):
    """The study in ``OUT/search.db`` (created, or loaded to resume: then its search settings must match)."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    interval, grace = heartbeat()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    storage = RDBStorage(f"sqlite:///{Path(out_dir).resolve() / 'search.db'}", heartbeat_interval=interval,
                         grace_period=grace,
                         heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    previous = len(optuna.get_all_study_names(storage)) > 0
    n_old = 0
    if previous:
        n_old = len(optuna.load_study(study_name="finetune", storage=storage).trials)
    sampler = (optuna.samplers.TPESampler(seed=seed + n_old, n_startup_trials=max(2, ss.trials // 3))
               if ss.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed + n_old))
    study = optuna.create_study(study_name="finetune", storage=storage, direction="maximize", sampler=sampler,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP), load_if_exists=True)
    if previous and study.user_attrs.get("frozen") != frozen:
        raise InputError("the search in this folder was started with other settings; give the same command, or "
                         "another --out", Path(out_dir) / "search.db")
    study.set_user_attr("frozen", frozen)
    if previous:
        _retry_orphans(study, storage)
    return study


def _retry_orphans(study, storage) -> None:
    """Fail (and queue again, as a stale heartbeat would) every trial a previous, killed process left
    running. One search runs per folder (``finetune`` holds the output folder's lock), so a running
    trial found at start-up has no process: one killed before its first heartbeat was recorded would
    otherwise never become stale and stay RUNNING for ever."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState
    retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
            retry(study, storage.get_trial(t._trial_id))


def run_search(ctx, ss: SearchSettings, *, log: Callable[[str], None]):
    """The search (module docstring) → (the best trial's :class:`~.run.Outcome`, search info)."""
    import optuna
    from optuna.trial import TrialState
    from crossmodal.evaluate.finetune.net import layer_index
    from crossmodal.evaluate.finetune.loop import NonFiniteLoss
    from crossmodal.evaluate.finetune.run import Outcome, build_net, train

    s = ctx.settings
    for name in ss.train_from:
        layer_index(ctx.graph, name, "--search-train-from")
    frozen = {k: v for k, v in s.to_dict().items() if k not in ("workers", "to", "device", "out_dir")}
    frozen["search"] = dataclasses.asdict(ss)
    frozen = json.loads(json.dumps(frozen))  # as the storage gives it back (lists, not tuples)
    study = open_study(ctx.out_dir, ss, s.seed, frozen)
    best_path = ctx.out_dir / "search" / "best.pt"
    epoch0 = study.user_attrs.get("epoch0")

    def settings_of(params: dict) -> Settings:
        return dataclasses.replace(s, lr=params["lr"], weight_decay=params["weight_decay"],
                                   train_from=params["train_from"], label_smoothing=params["label_smoothing"],
                                   epochs=ss.epochs, unfreeze_at=None)

    def objective(trial) -> float:
        nonlocal epoch0
        params = {"lr": trial.suggest_float("lr", *ss.lr, log=True),
                  "weight_decay": trial.suggest_float("weight_decay", *WEIGHT_DECAY, log=True),
                  "train_from": trial.suggest_categorical("train_from", ss.train_from),
                  "label_smoothing": trial.suggest_float("label_smoothing", *LABEL_SMOOTHING)}
        log(f"trial {trial.number}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in params.items()))

        def on_epoch(epoch: int, row: dict) -> None:
            trial.report(row["val_top1"], epoch)
            if trial.should_prune():
                log(f"trial {trial.number} pruned after epoch {epoch} (val top-1 {100 * row['val_top1']:.2f} %)")
                raise optuna.TrialPruned()
        st = settings_of(params)
        outcome = train(ctx, st, checkpoints=False, epoch0=epoch0, on_epoch=on_epoch)
        if epoch0 is None:
            epoch0 = outcome.state["epoch0"]
            study.set_user_attr("epoch0", epoch0)
        value = float(outcome.chosen["val_top1"])
        done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        if not done or value > max(t.value for t in done):
            checkpoint.save(best_path, {"format": checkpoint.FORMAT, "trial": trial.number, "settings": st.to_dict(),
                                        "model": outcome.net.state_dict(), "history": outcome.history,
                                        "state": outcome.state, "chosen": outcome.chosen})
        return value

    def finished() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    attempts = 0
    while finished() < ss.trials and attempts < 3 * ss.trials:
        attempts += 1
        study.optimize(objective, n_trials=1, catch=(NonFiniteLoss,))
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise InputError("the search finished no trial (every one pruned or failed): widen --search-lr", ctx.out_dir)
    best = checkpoint.load(best_path)
    st = Settings(**best["settings"])
    net, _ = build_net(ctx, st)
    net.load_state_dict(best["model"])
    outcome = Outcome(net, best["history"], best["state"], best["chosen"], {}, False)
    rows = trial_rows(study, ss.epochs)
    summary = {"trials": len(rows), "sampler": ss.sampler, "epochs_per_trial": ss.epochs, "best_trial": best["trial"],
               "best_value": float(best["chosen"]["val_top1"]), "best_settings": {k: best["settings"][k] for k in
                                                                                 ("lr", "weight_decay", "train_from",
                                                                                  "label_smoothing")},
               "pruned": sum(r["state"] == "pruned" for r in rows), "storage": str(ctx.out_dir / "search.db"),
               "command": command_line(st, s)}
    return outcome, {"settings": st, "rows": rows, "summary": summary}


def trial_rows(study, epochs: int) -> list[dict]:
    """One row per trial: number, state, settings, val top-1 per epoch, value."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"trial": t.number, "state": t.state.name.lower(), **t.params,
               "value": t.value if t.value is not None else None}
        row.update({f"val_top1_epoch{e}": t.intermediate_values.get(e) for e in range(1, epochs + 1)})
        rows.append(row)
    return rows


def command_line(best: Settings, s: Settings) -> str:
    """The best setting as a ready ``crossmodal finetune`` command (full --epochs, a new --out)."""
    args = ["crossmodal", "finetune", "--model", s.model_dir, "--modality", ",".join(s.modalities),
            *(["--data-root", s.data_root] if s.data_root else []), *(["--config", s.config] if s.config else []),
            "--out", str(Path(s.out_dir)) + "-best", "--train-from", best.train_from, "--lr", f"{best.lr:.3g}",
            "--weight-decay", f"{best.weight_decay:.3g}", "--label-smoothing", f"{best.label_smoothing:.3g}",
            "--epochs", str(s.epochs), "--batch-size", str(s.batch_size), "--optimizer", s.optimizer,
            "--augment", s.augment, "--sched", s.sched]
    return " ".join(shlex.quote(a) for a in args)


def write_search_files(stage: Path, info: dict, results: dict) -> dict[str, Path]:
    """``search.csv`` and ``search.png`` (val top-1 against the learning rate) into ``stage``."""
    from crossmodal.ir import identity
    from crossmodal.reports.figures import new_figure, save_png
    from crossmodal.reports.text import write_csv
    rows = info["rows"]
    epochs = info["summary"]["epochs_per_trial"]
    header = ["trial", "state", "lr", "weight_decay", "train_from", "label_smoothing", "value"] + \
        [f"val_top1_epoch{e}" for e in range(1, epochs + 1)]
    files = {"search.csv": write_csv(stage / "search.csv", header, [[r.get(k, "") if r.get(k) is not None else ""
                                                                      for k in header] for r in rows])}
    fig = new_figure(6.5, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for state, marker, face in (("complete", "o", "#3b7dd8"), ("pruned", "o", "none")):
        pts = [(r["lr"], max(v for k, v in r.items() if k.startswith("val_top1_epoch") and v is not None))
               for r in rows if r["state"] == state and "lr" in r
               and any(v is not None for k, v in r.items() if k.startswith("val_top1_epoch"))]
        if pts:
            ax.scatter([p[0] for p in pts], [100 * p[1] for p in pts], marker=marker, facecolors=face,
                       edgecolors="#3b7dd8", label=state)
    b = info["summary"]
    ax.scatter([b["best_settings"]["lr"]], [100 * b["best_value"]], marker="*", s=180, color="#d8643b",
               label=f"best (trial {b['best_trial']})", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("val top-1 (%) (best epoch of the trial)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(identity.titled(f"Search: {b['trials']} trials, {b['sampler']} sampler", results["weights"]),
                 fontsize=10)
    files["search.png"] = save_png(fig, stage / "search.png")
    return files
