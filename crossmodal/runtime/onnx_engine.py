"""``model.onnx`` on ONNX Runtime.

The IR layers wanted that are not outputs of the file are added as extra graph outputs, in
memory (a dropout, which has no node, maps to its input's tensor). ``precision="fp16"`` runs
the cached fp16 model (:func:`~crossmodal.runtime.precision.fp16_onnx`), its layers exposed
through float32 casts; TensorRT (``trt=True``) makes its own fp16 kernels from the fp32 model.

On a GPU: the CUDA execution provider (TensorRT first with ``trt``, engines cached in
``<cache>/trt``) with I/O binding: each batch is copied into a pinned (page-locked) host buffer
and from there once into a device ``OrtValue`` reused from batch to batch; outputs are bound on
the device and copied to the host only when :meth:`OnnxEngine.run` returns them. ``auto`` keeps a
GPU only after a warm-up run succeeded on it (:mod:`~crossmodal.runtime.ort_session`) and falls
back to the CPU provider, saying why in ``describe()`` (``fallback``). On the CPU, ``threads``
sets ``intra_op_num_threads`` (default: one per physical core) and spinning is off, so idle
intra-op workers yield the CPU to the image-decoding threads instead of busy-waiting
(``benchmarks/bench_baseline.py --sweep`` measured the choices on 2 cores).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from crossmodal.errors import InputError
from crossmodal.ir.graph import Graph
from crossmodal.runtime import precision as P
from crossmodal.runtime.devices import cuda_index
from crossmodal.runtime.engine import ALL, Engine


def onnx_layer_outputs(proto, graph: Graph) -> dict[str, str]:
    """IR layer name → the ONNX tensor holding its output (a dropout, which has no node,
    maps to its input's tensor)."""
    from crossmodal.emitters.to_onnx import layer_tensors

    tensors = layer_tensors(proto)
    mapping: dict[str, str] = {}
    for layer in graph.layers:
        if layer.name in tensors:
            mapping[layer.name] = tensors[layer.name]
        elif layer.kind == "dropout" and layer.inputs[0] in mapping:
            mapping[layer.name] = mapping[layer.inputs[0]]
    return mapping


def add_graph_outputs(proto, tensors) -> None:
    """Append ``tensors`` (names) to ``proto``'s graph outputs, in order, skipping present ones."""
    import onnx

    existing = {o.name for o in proto.graph.output}
    for t in dict.fromkeys(tensors):
        if t not in existing:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))


def _has_external_data(proto) -> bool:
    """Whether any initializer of ``proto`` keeps its bytes in an external file."""
    import onnx
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def model_file(model_dir: Path, name: str, fmt: str) -> Path:
    """``model_dir / name``, or an InputError saying how to make it."""
    path = Path(model_dir) / name
    if not path.is_file():
        raise InputError(f"missing {name}: convert with --to including {fmt}, or use another engine", model_dir)
    return path


class OnnxEngine(Engine):
    """``model.onnx`` (or its fp16 twin) on ONNX Runtime (module docstring)."""

    name = "onnx"

    def __init__(self, model_dir: Path, graph: Graph, outputs: Sequence[str] | str, *, device: str = "auto",
                 precision: str = "fp32", allow_tf32: bool = False, threads: int | None = None,
                 io_binding: bool | None = None, spinning: bool = False, trt: bool = False,
                 cache_dir: str | os.PathLike | None = None, pinned: bool | None = None, max_batch: int = 256,
                 log=None) -> None:
        import onnx
        import onnxruntime as ort

        from crossmodal.runtime.ort_session import open_session

        self.precision = P.check_precision(precision)
        if P.unsupported("onnx", self.precision):
            raise InputError(P.unsupported("onnx", self.precision))
        path = model_file(model_dir, "model.onnx", "onnx")
        if self.precision == "fp16" and not trt:  # TensorRT makes its own fp16 kernels from the fp32 model
            path = P.fp16_onnx(model_dir, cache_dir, log=log)
        self.model_path = path
        try:  # the graph without external tensor data: enough to see its outputs
            head = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # DecodeError and friends
            raise InputError(f"not a readable ONNX model ({exc.__class__.__name__})", path) from None
        proto = onnx.load(str(path)) if _has_external_data(head) else head
        del head
        tensors = onnx_layer_outputs(proto, graph)
        present = {o.name for o in proto.graph.output}
        super().__init__(graph, outputs, tensors, device="cpu", path=path)
        if outputs == ALL:
            self.tensors = dict(tensors)  # IR layer → the tensor read
        else:  # a file's own output under the public name when it has one, else the layer's tensor
            self.tensors = {}
            for name, ir in self.outputs.items():
                if name not in present and ir not in tensors:
                    raise InputError(f"{path.name} has no tensor for {name!r} (IR layer {ir!r})", path)
                self.tensors.setdefault(ir, name if name in present else tensors[ir])
            self.observable = set(self.tensors)
        extra = [t for t in dict.fromkeys(self.tensors.values()) if t not in present]
        if extra:
            if path.name == P.FP16_NAME:  # fp16 tensors reach the outputs through float32 casts
                cast = P.add_float_outputs(proto, extra)
                self.tensors = {ir: cast.get(t, t) for ir, t in self.tensors.items()}
            else:
                add_graph_outputs(proto, extra)
            source = proto.SerializeToString()
        else:
            source = str(path)
        del proto
        self.trt, self.spinning = trt, spinning
        trt_cache = (Path(cache_dir) if cache_dir else P.default_model_cache()) / "trt" if trt else None
        self.sess, self.session_info = open_session(
            source, device, allow_tf32=allow_tf32, threads=threads, spinning=spinning, trt=trt,
            precision=self.precision, trt_cache=trt_cache, max_batch=max_batch)
        self.providers = self.session_info.providers
        if trt and self.precision == "fp16" and self.providers[0] != "TensorrtExecutionProvider":
            # the fp32 model would run, labelled fp16: refuse instead
            raise InputError(f"--trt --precision fp16: TensorRT did not start ({self.session_info.fallback}); "
                             "without --trt the fp16 ONNX model runs on CUDA")
        self.on_gpu = self.session_info.on_gpu
        self.device = f"cuda:{cuda_index(device)}" if self.on_gpu else "cpu"
        self.allow_tf32 = allow_tf32
        self.io_binding = self.on_gpu if io_binding is None else bool(io_binding)
        self.pinned = self.on_gpu and self.io_binding if pinned is None else bool(pinned) and self.on_gpu
        self.input_name = self.sess.get_inputs()[0].name
        self._ort = ort
        self._device_input = None  # (shape, OrtValue on the device), reused while the batch shape holds
        self._host = None          # pinned host staging buffer (numpy view of a page-locked torch tensor)

    def _run(self, batch, layers):
        names = list(dict.fromkeys(self.tensors[l] for l in layers))
        if self.io_binding:
            outs = self._run_bound(batch, names)
        else:
            outs = dict(zip(names, self.sess.run(names, {self.input_name: batch})))
        return {l: outs[self.tensors[l]] for l in layers}

    def _staged(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` copied into the pinned host buffer (grown when needed); ``batch`` itself
        when pinning is off or unavailable."""
        if not self.pinned:
            return batch
        if self._host is None or self._host.size < batch.size:
            try:
                import torch
                self._host = torch.empty(batch.size, dtype=torch.float32, pin_memory=True).numpy()
            except Exception:  # no CUDA-enabled torch: pageable memory, said in describe()
                self.pinned = False
                return batch
        host = self._host[:batch.size].reshape(batch.shape)
        np.copyto(host, batch)
        return host

    def _run_bound(self, batch: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        """One host→device copy of the input, outputs bound on the device, then read back."""
        kind, index = ("cuda", cuda_index(self.device)) if self.on_gpu else ("cpu", 0)
        binding = self.sess.io_binding()
        if self._device_input is None or self._device_input[0] != batch.shape:
            self._device_input = (batch.shape, self._ort.OrtValue.ortvalue_from_shape_and_type(
                batch.shape, np.float32, kind, index))
        value = self._device_input[1]
        value.update_inplace(self._staged(batch))
        binding.bind_ortvalue_input(self.input_name, value)
        for name in names:
            binding.bind_output(name, kind, index)
        self.sess.run_with_iobinding(binding)
        return dict(zip(names, binding.copy_outputs_to_cpu()))  # read back once, when returned

    def _describe(self) -> dict:
        opts = self.sess.get_session_options() if self.sess is not None else None
        out = {"precision": self.precision, "model_file": self.model_path.name, **self.session_info.to_dict(),
               "io_binding": self.io_binding, "pinned_host_buffers": self.pinned,
               "intra_op_threads": (opts.intra_op_num_threads if opts else 0) or "default (physical cores)",
               "spinning": self.spinning, "allow_tf32": self.allow_tf32, "onnxruntime": self._ort.__version__}
        if self.trt:
            out["trt"] = True
        return out

    def close(self) -> None:
        self.sess = self._device_input = self._host = None
