"""Checkpoints: ``OUT/checkpoints/last.pt`` (everything a resume needs) and ``best.pt`` (the best
epoch's weights), written atomically (a temporary sibling renamed into place), read with
``torch.load(weights_only=True)`` (a checkpoint is data, never code).

``last.pt`` holds ``format``, ``settings`` (the run's, see :mod:`.settings`), ``epoch`` (epochs
finished), ``step`` (steps finished in the epoch under way: a ``--save-every`` checkpoint),
``global_step``, ``first`` (the first trainable layer now), ``model``, ``optimizer``, ``scaler``,
``rng`` (torch's generator states, one per rank), ``history`` (the rows of ``history.csv``),
``partial`` (the running sums of the epoch under way), ``state`` (best epoch and score, epochs
without improvement, epoch-0 and baseline scores, images that failed to decode).
"""
from __future__ import annotations

from pathlib import Path

from crossmodal.errors import InputError
from crossmodal.io.atomic import atomic_path

FORMAT = "crossmodal-finetune-checkpoint"
LAST, BEST = "last.pt", "best.pt"


def folder(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save(path: Path, data: dict) -> Path:
    """``torch.save`` to a temporary sibling, then rename (a reader never sees half a file)."""
    import torch
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def load(path: Path) -> dict:
    """A checkpoint this tool wrote (InputError: missing, unreadable or another kind of file)."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise InputError("--resume: no checkpoint here (a run writes checkpoints/last.pt after its first "
                         "epoch); start without --resume", path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise InputError(f"not a readable checkpoint ({type(exc).__name__}: {str(exc)[:120]})", path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError("not a crossmodal fine-tuning checkpoint", path)
    return data


def rng_state(device) -> dict:
    import torch
    out = {"torch": torch.get_rng_state()}
    if getattr(device, "type", str(device)) == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict, device) -> None:
    import torch
    torch.set_rng_state(state["torch"])
    if "cuda" in state and getattr(device, "type", str(device)) == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
