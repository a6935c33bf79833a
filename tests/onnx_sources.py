"""ONNX files from other exporters for the ONNX reader's tests: plain torch modules exported by
``torch.onnx`` (legacy, and dynamo when onnxscript is there), and graphs written by hand with
``onnx.helper`` the way tf2onnx writes them (NHWC input, SAME padding, Transpose before Flatten,
ReduceMean) — nothing from crossmodal's own emitter."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from plain_zoo import ALEXNET_TINY, DENSENET_TINY, PlainAlexNet, PlainDenseNet, _BasicBlock, randomise


class TinyResNet(nn.Module):
    """torchvision's ResNet layout, narrow: stem, a plain and a downsampling basic block, fc; the
    flatten written ``x.view(x.size(0), -1)`` (the Shape → Gather → Concat → Reshape chain)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False), nn.BatchNorm2d(8)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1, self.layer2 = nn.Sequential(_BasicBlock(8, 8, 1)), nn.Sequential(_BasicBlock(8, 16, 2))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.maxpool(torch.relu(self.bn1(self.conv1(x))))))
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.fc(x.view(x.size(0), -1))


def plain_module(family: str) -> tuple[nn.Module, tuple[int, int, int]]:
    """A randomised plain torch module of ``family`` and its input (C, H, W)."""
    if family == "resnet":
        return randomise(TinyResNet(), 1), (3, 32, 32)
    if family == "alexnet":
        a = ALEXNET_TINY
        return randomise(PlainAlexNet(a["widths"], a["hidden"], a["classes"], a["pool"]), 2), a["input"]
    d = DENSENET_TINY
    return randomise(PlainDenseNet(d["growth"], d["blocks"], d["init"], d["bn_size"], d["classes"]), 3), d["input"]


def export(module: nn.Module, shape, path: Path, *, dynamo: bool = False, opset: int = 13) -> Path:
    """``torch.onnx.export`` with a dynamic batch."""
    import warnings
    x = torch.randn(2, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, (x,), str(path), dynamo=True, opset_version=opset, input_names=["x"],
                              dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=64)}}, verbose=False)
        else:
            torch.onnx.export(module, x, str(path), dynamo=False, opset_version=opset, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return path


def _init(name: str, arr) -> object:
    from onnx import numpy_helper
    return numpy_helper.from_array(np.asarray(arr), name)


def tf2onnx_style(path: Path, *, opset: int = 13, flatten: str = "reduce_mean", seed: int = 0) -> Path:
    """An NHWC Keras-like network as tf2onnx writes it: input N×12×10×3 → Mul/Sub scalars (the
    model's own rescaling) → Transpose to NCHW → Conv 3×3 stride 2 SAME_UPPER (+ Add bias) →
    Clip(0, 6) → MaxPool 3×3 stride 2 SAME_UPPER → Pad → Conv (valid) → Relu → then
    ``flatten``: ``reduce_mean`` (ReduceMean over H, W) or ``transpose`` (back to NHWC and
    flattened through the Shape chain) → MatMul + Add → Softmax."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.normal(0, 0.5, s).astype(np.float32)  # noqa: E731
    inits = [_init("scale", np.float32(1 / 127.5)), _init("one", np.float32(1.0)),
             _init("w1", f32(6, 3, 3, 3)), _init("b1", f32(6, 1, 1)), _init("six", np.float32(6.0)),
             _init("zero", np.float32(0.0)), _init("w2", f32(5, 6, 3, 3)),
             _init("pads", np.array([0, 0, 1, 0, 0, 0, 1, 1], np.int64))]
    nodes = [helper.make_node("Mul", ["image", "scale"], ["scaled"], name="rescale/mul"),
             helper.make_node("Sub", ["scaled", "one"], ["shifted"], name="rescale/sub"),
             helper.make_node("Transpose", ["shifted"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w1"], ["c1"], name="conv1", strides=[2, 2], auto_pad="SAME_UPPER",
                              kernel_shape=[3, 3]),
             helper.make_node("Add", ["c1", "b1"], ["c1b"], name="conv1/bias"),
             helper.make_node("Clip", ["c1b", "zero", "six"], ["r1"], name="relu6"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2],
                              auto_pad="SAME_UPPER"),
             helper.make_node("Pad", ["p1", "pads"], ["p1pad"], name="pad2", mode="constant"),
             helper.make_node("Conv", ["p1pad", "w2"], ["c2"], name="conv2", kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2")]
    if flatten == "reduce_mean":
        if opset >= 18:
            inits.append(_init("axes", np.array([2, 3], np.int64)))
            nodes.append(helper.make_node("ReduceMean", ["r2", "axes"], ["feat"], name="gap", keepdims=0))
        else:
            nodes.append(helper.make_node("ReduceMean", ["r2"], ["feat"], name="gap", axes=[2, 3], keepdims=0))
        n_in = 5
    else:
        inits.append(_init("zero_idx", np.array(0, np.int64)))
        inits.append(_init("minus_one", np.array([-1], np.int64)))
        inits.append(_init("unsq_axes", np.array([0], np.int64)))
        nodes += [helper.make_node("Transpose", ["r2"], ["nhwc"], name="to_nhwc", perm=[0, 2, 3, 1]),
                  helper.make_node("Shape", ["nhwc"], ["shape"], name="shape"),
                  helper.make_node("Gather", ["shape", "zero_idx"], ["batch"], name="batch", axis=0),
                  helper.make_node("Unsqueeze", ["batch", "unsq_axes"], ["batch1"], name="batch1"),
                  helper.make_node("Concat", ["batch1", "minus_one"], ["target"], name="target", axis=0),
                  helper.make_node("Reshape", ["nhwc", "target"], ["feat"], name="flatten")]
        n_in = 5 * 3 * 2
    inits += [_init("wd", f32(n_in, 4)), _init("bd", f32(4))]
    nodes += [helper.make_node("MatMul", ["feat", "wd"], ["mm"], name="dense/matmul"),
              helper.make_node("Add", ["mm", "bd"], ["logits"], name="dense"),
              helper.make_node("Softmax", ["logits"], ["prob"], name="prob", axis=-1)]
    graph = helper.make_graph(nodes, "keras_like", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                  ["N", 12, 10, 3])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 4])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tf2onnx")
    model.ir_version = 8
    import onnx
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def run_source(path: Path, x_nhwc_or_nchw: np.ndarray, output: str | None = None) -> np.ndarray:
    """The source file on ONNX Runtime (its first output, or ``output``)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output] if output else [sess.get_outputs()[0].name]
    return sess.run(names, {sess.get_inputs()[0].name: x_nhwc_or_nchw.astype(np.float32)})[0]
