"""The fine-tuning job's parts, pure: settings and resume rules, the schedule, epoch orders and shards,
seeded augmentation, the warm head, the trainable module (frozen prefix, towers sharing one top)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from crossmodal.errors import InputError
from crossmodal.evaluate.finetune.data import (
    ImageSet, Split, batches, epoch_order, shard, val_shard,
)
from crossmodal.evaluate.finetune.settings import Settings, lr_factor, resume_changes

from finetune_fixtures import ft_model, ft_root  # noqa: F401  (fixtures)


def settings(**kw) -> Settings:
    return Settings(model_dir="m", modalities=["sketch"], out_dir="o", **kw)


@pytest.mark.parametrize("kw, words", [
    ({"optimizer": "adam"}, "--optimizer"), ({"epochs": 0}, "--epochs"), ({"lr": -1.0}, "--lr"),
    ({"label_smoothing": 1.0}, "--label-smoothing"), ({"unfreeze_at": 2}, "--train-from LAYER"),
    ({"unfreeze_at": 10, "train_from": "fc6"}, "between 1"), ({"to": ["onnx"]}, "--to"),
    ({"towers": "per-modality", "shared_from": "fc6"}, "two modalities"),
    ({"shared_from": "fc6"}, "--towers per-modality"),
])
def test_settings_are_checked_in_one_line(kw, words):
    with pytest.raises(InputError) as err:
        settings(**kw).check()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_resume_refuses_changed_settings_except_growing_epochs_and_free_ones():
    old = settings(epochs=4).to_dict()
    assert resume_changes(old, settings(epochs=6, workers=3, to=["ir"]).to_dict()) == []
    assert resume_changes(old, settings(epochs=3).to_dict()) == ["epochs: 4 → 3 (may only grow)"]
    changed = resume_changes(old, settings(epochs=4, lr=0.1, augment="none").to_dict())
    assert changed == ["augment: 'light' → 'none'", "lr: 0.001 → 0.1"]


def test_schedule_warms_up_then_decays():
    s = settings(epochs=4, warmup_epochs=1, sched="cosine")
    f = [lr_factor(i, 10, s) for i in range(40)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.01
    st = settings(epochs=6, sched="step")
    assert [lr_factor(e * 5, 5, st) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(17, 5, settings(sched="none")) == 1.0


def test_epoch_orders_are_seeded_balanced_and_shards_are_exact():
    mods = np.array([0] * 6 + [1] * 2)
    a, b = epoch_order(0, 3, mods, "modality"), epoch_order(0, 3, mods, "modality")
    assert np.array_equal(a, b) and not np.array_equal(a, epoch_order(0, 4, mods, "modality"))
    assert np.bincount(mods[a]).tolist() == [6, 6]  # the clip-art images drawn as often as the sketches
    assert sorted(epoch_order(1, 0, mods, "none").tolist()) == list(range(8))
    for world in (1, 2, 3):
        parts = [shard(a, r, world) for r in range(world)]
        assert len({len(p) for p in parts}) == 1  # every rank takes the same number of steps
        assert set(np.concatenate(parts).tolist()) == set(a.tolist())
        val = np.concatenate([val_shard(11, r, world) for r in range(world)])
        assert sorted(val.tolist()) == list(range(11))  # validation: each image exactly once, no padding
    assert batches(np.arange(10), 4, start=1) == [[4, 5, 6, 7], [8, 9]]


def test_augmentation_depends_on_seed_epoch_and_sample_only(ft_root, tiny_preprocess):
    from crossmodal.evaluate.finetune.data import load_data
    data = load_data(["sketch"], data_root=ft_root)
    split = Split(data.train.paths[:3], data.train.labels[:3], data.train.mods[:3])
    for level in ("light", "strong"):
        a = ImageSet(split, tiny_preprocess, None, level, seed=5)
        b = ImageSet(split, tiny_preprocess, None, level, seed=5)
        x = a.load(1, epoch=2)
        assert x.shape == (3, 20, 28) and x.dtype == np.float32
        assert np.array_equal(x, b.load(1, epoch=2))
        assert not np.array_equal(x, a.load(1, epoch=3))
    plain = ImageSet(split, tiny_preprocess, None, "none", seed=5)
    from crossmodal.data.images import load_image
    assert np.array_equal(plain.load(0, epoch=9), load_image(split.paths[0], tiny_preprocess))  # = baseline's


def test_the_warm_head_starts_from_the_mapped_labels_rows(ft_model, ft_root):
    from crossmodal.evaluate.finetune.prepare import prepare
    s = Settings(model_dir=str(ft_model), modalities=["sketch"], out_dir=str(ft_root.parent / "o"),
                 data_root=str(ft_root))
    ctx = prepare(s, need_device=False)
    w0, b0 = (ctx.ir.weights[f"fc8.{r}"] for r in ("weight", "bias"))
    w, b = ctx.head
    assert w.shape == (7, w0.shape[1])
    for row, src in enumerate(ctx.mapping.target_to_source):
        if src is not None:
            assert np.array_equal(w[row], w0[src]) and b[row] == b0[src]
        else:  # kitchenette: no label, a small random row
            assert np.abs(w[row]).max() < 0.1 and b[row] == b0.min()
    # the shared label /t/temple/asia starts both temple rows
    t = [ctx.data.classes.index(c) for c in ("temple_east_asia", "temple_south_asia")]
    assert np.array_equal(w[t[0]], w[t[1]])


def _net(ft_model, **kw):
    from crossmodal.evaluate.finetune.net import build
    from crossmodal.ir.store import load_ir
    ir = load_ir(ft_model)
    names = [l.name for l in ir.graph.layers]
    return ir, names, build(ir, **{"first": names.index("fc6"), **kw})


def test_the_frozen_prefix_runs_without_autograd_and_keeps_no_activation(ft_model):
    import torch
    ir, names, net = _net(ft_model)
    net.train()
    assert not net.layers["conv1_1"].weight.requires_grad and net.layers["fc6"].weight.requires_grad
    assert net.layers["drop7"].training and not net.layers["conv1_1"].training  # frozen: eval mode
    x = torch.randn(2, 3, 20, 28)
    values = net.forward_values(x)
    assert set(values) == {"fc8"}  # every other value dropped after its last reader
    out = net(x)
    out.sum().backward()
    assert net.layers["conv1_1"].weight.grad is None and net.layers["fc6"].weight.grad is not None
    counts = net.parameter_counts()
    assert counts["trainable_params"] + counts["frozen_params"] == ir.graph.parameter_count()
    assert net.trainable_layers() == ["fc6", "fc7", "fc8"]
    net.eval()
    from crossmodal.emitters.to_torch import build_torch
    with torch.no_grad():
        assert torch.equal(net(x), build_torch(ir)(x))  # --head keep, nothing trained: the base network


def test_towers_share_one_top_and_start_from_the_base(ft_model):
    import torch
    ir, names, net = _net(ft_model, first=names_index(ft_model, "conv2_1"), towers=["sketch", "clipart"],
                          shared_from=names_index(ft_model, "fc6"))
    assert set(net.towers["sketch"]) == {"conv2_1", "relu2_1", "pool2", "flatten"}
    a, b = net.towers["sketch"]["conv2_1"].weight, net.towers["clipart"]["conv2_1"].weight
    assert a is not b and torch.equal(a, b) and torch.equal(a, torch.from_numpy(ir.weights["conv2_1.weight"]))
    assert "conv2_1" not in net.layers and net.layers["fc6"].weight.requires_grad
    shared = [p for n, p in net.named_parameters() if n.startswith("layers.fc6")]
    assert len(shared) == 2  # one weight, one bias: not copies
    with torch.no_grad():
        net.towers["clipart"]["conv2_1"].weight.mul_(0.5)
    x, m = torch.randn(4, 3, 20, 28), torch.tensor([0, 1, 1, 0])
    net.eval()
    with torch.no_grad():
        both = net(x, m)
        one = torch.cat([net(x[i:i + 1], m[i:i + 1]) for i in range(4)])
    assert torch.allclose(both, one, atol=1e-6)  # each sample through its own tower
    assert not torch.allclose(both[1], net(x[1:2], torch.tensor([0]))[0])


def names_index(model_dir, name):
    from crossmodal.ir.store import load_graph
    return [l.name for l in load_graph(model_dir).layers].index(name)


def test_settings_are_a_dataclass_of_plain_values():
    d = settings().to_dict()
    assert dataclasses.is_dataclass(Settings) and d["to"] == ["ir", "onnx", "keras"] and d["head"] == "new"


def test_a_trial_left_running_without_a_heartbeat_is_failed_and_queued_again_on_resume(tmp_path):
    """A search killed right after a trial started (before its first heartbeat) leaves a RUNNING trial
    that never turns stale; opening the study again (one search per folder: the lock) fails it and
    queues its settings again, as the heartbeat callback does for a stale one."""
    from helpers import require_module
    optuna = require_module("optuna", "the train extra: crossmodal finetune --search")
    from optuna.trial import TrialState
    from crossmodal.evaluate.finetune.search import SearchSettings, open_study
    ss = SearchSettings.parse(4, 2, "random", "1e-4,1e-1", "fc6")
    frozen = {"a": 1}
    study = open_study(tmp_path, ss, 0, frozen)
    orphan = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    assert study.trials[0].state == TrialState.RUNNING
    again = open_study(tmp_path, ss, 0, frozen)
    states = [t.state for t in again.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert again.trials[1].params == {"lr": orphan.params["lr"]}
