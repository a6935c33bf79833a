"""Keras models (``.keras``, legacy ``.h5``) → IR, read as data: nothing in the file runs.

The model's config (JSON) is walked before any weight is read: a ``Lambda`` layer (Python code
stored in the file) or a custom object (a class or function Keras would look up by a registered
name) is refused naming it, as ``keras.saving.load_model(path, safe_mode=True)`` refuses them,
and every layer the IR cannot hold is listed at once in one :class:`UnsupportedError`
(:mod:`from_keras_layers`, :mod:`from_keras_pool`: Conv2D, DepthwiseConv2D, Dense,
BatchNormalization, ReLU/LeakyReLU/Activation, MaxPooling2D, AveragePooling2D,
GlobalAveragePooling2D, Flatten, Dropout, Concatenate, Add/Subtract/Average/Multiply/Maximum,
Softmax, ZeroPadding2D folded into the conv/pooling it feeds, Rescaling as an Add's coefficient,
and crossmodal's ``crossmodal>LocalResponseNorm``).

Functional and Sequential models with one image input (N, H, W, C) and one output. IR layers take
the Keras layer names (a fused activation gets ``{name}_relu``), and ``graph.keras_names`` keeps
them, so emitting Keras again gives the same names. Blobs: every Keras layer's name → the IR layer
holding its output (after its activation); ``logits`` is the output Dense (before a softmax),
``prob`` the softmax (added after the logits when the model outputs logits, as the Keras emitter's
models do: noted); ``graph.feature_blob`` is what the classifier reads (``fc2`` in a Keras VGG16).

A Keras file does not say how images are preprocessed: the caller gives a spec, else torchvision's
is used and a provenance note (``preprocessing: …``) says so.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from crossmodal.errors import InputError, UnsupportedError
from crossmodal.ir.graph import Graph, InputSpec, IRModel, Provenance
from crossmodal.ir.preprocess import PREPROCESS_PRESETS, Preprocess
from crossmodal.ir.validation import validate
from crossmodal.readers import from_keras_pool  # noqa: F401  (registers its converters)
from crossmodal.readers.from_keras_file import KERAS_SUFFIXES, KerasFile, open_keras_file  # noqa: F401
from crossmodal.readers.from_keras_layers import CONVERTERS, LIMITS, KerasBuilder, Node, Value

MODEL_CLASSES = ("Functional", "Model", "Sequential")
#: Registered names of the custom objects the reader knows (crossmodal's own LRN).
KNOWN_CUSTOM = {"crossmodal>LocalResponseNorm"}


def _class(entry: dict) -> str:
    """A layer entry's class name; crossmodal's own LRN by its registered name (a legacy HDF5
    records ``crossmodal>LocalResponseNorm`` as the class name)."""
    cls = entry.get("class_name")
    return "LocalResponseNorm" if cls in KNOWN_CUSTOM or entry.get("registered_name") in KNOWN_CUSTOM else cls


def _layer_configs(config: dict) -> list[dict]:
    return list((config.get("config") or {}).get("layers") or [])


def refuse_code(config: dict, path: Path) -> None:
    """Refuse, naming them, Lambda layers and custom objects anywhere in the config (nested models
    included), before anything else is read."""
    found: list[str] = []

    def walk(obj, where: str) -> None:
        if isinstance(obj, dict):
            cls, reg = obj.get("class_name"), obj.get("registered_name")
            name = (obj.get("config") or {}).get("name") if isinstance(obj.get("config"), dict) else None
            label = name or where
            if cls in ("Lambda", "TFOpLambda", "SlicingOpLambda"):
                found.append(f"{label!r} is a {cls} layer (Python code stored in the file)")
                return
            module = obj.get("module")
            foreign = isinstance(module, str) and not module.startswith(("keras", "crossmodal"))
            if reg not in KNOWN_CUSTOM and (foreign or (isinstance(reg, str) and reg != cls
                                                        and not reg.startswith("keras"))):
                what = obj.get("config") if cls == "function" else reg or cls
                found.append(f"{label!r} is a custom object {what!r}" + (f" from module {module!r}" if module else ""))
                return
            for key, value in obj.items():
                walk(value, name or where)
        elif isinstance(obj, list):
            for value in obj:
                walk(value, where)

    walk(config, "model")
    if found:
        raise UnsupportedError("refused without running anything (as Keras' safe_mode=True): "
                               + "; ".join(found) + "; rebuild the model from built-in layers", path)


def _history(arg) -> list[tuple[str, int, int]]:
    """The (layer, node, tensor) each inbound tensor of a Keras 3 or Keras 2 node names."""
    if isinstance(arg, dict):
        if arg.get("class_name") == "__keras_tensor__":
            layer, node, tensor = arg["config"]["keras_history"]
            return [(layer, int(node), int(tensor))]
        return []
    if isinstance(arg, list):
        if len(arg) >= 3 and isinstance(arg[0], str) and isinstance(arg[1], int):  # Keras 2: [name, node, t, kw]
            return [(arg[0], int(arg[1]), int(arg[2]))]
        return [h for a in arg for h in _history(a)]
    return []


def _refs(value) -> list[str]:
    """Layer names of ``input_layers`` / ``output_layers``: [name, 0, 0] or a list of them."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return [value[0]]
    return [r for v in value or [] for r in _refs(v)]


def _input_shape(cfg: dict) -> list | None:
    return cfg.get("batch_shape") or cfg.get("batch_input_shape")


def model_nodes(config: dict, path: Path) -> tuple[list[Node], str, list, str]:
    """The model's layers as :class:`Node` s in order (InputLayer left out), the input layer's name,
    its batch shape, and the output layer's name."""
    cls, inner = config.get("class_name"), config.get("config") or {}
    if cls not in MODEL_CLASSES:
        raise UnsupportedError(f"a Keras {cls!r} object, not a Functional or Sequential model", path)
    nodes, input_name, shape = [], None, None
    entries = _layer_configs(config)
    if cls == "Sequential":
        prev = "input"
        for i, entry in enumerate(entries):
            c = entry.get("config") or {}
            if entry.get("class_name") == "InputLayer":
                input_name, shape, prev = c.get("name", "input"), _input_shape(c), c.get("name", "input")
                continue
            if i == 0:
                input_name, shape = "input", _input_shape(c) or inner.get("build_input_shape")
            nodes.append(Node(c.get("name") or f"layer_{i}", _class(entry), c, [prev]))
            prev = nodes[-1].name
        return nodes, input_name or "input", shape, prev
    inputs, outputs = _refs(inner.get("input_layers")), _refs(inner.get("output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedError(f"{len(inputs)} inputs and {len(outputs)} outputs; the IR holds one image "
                               "input and one output", path)
    for entry in entries:
        c, name = entry.get("config") or {}, entry.get("name") or (entry.get("config") or {}).get("name")
        if entry.get("class_name") == "InputLayer":
            if name == inputs[0]:
                input_name, shape = name, _input_shape(c)
            continue
        calls = entry.get("inbound_nodes") or []
        if len(calls) != 1:
            nodes.append(Node(name, "(shared)", c, []))
            continue
        call = calls[0]
        hist = _history(call.get("args", []) if isinstance(call, dict) else call)
        if any(n or t for _, n, t in hist):
            nodes.append(Node(name, "(shared)", c, []))
            continue
        nodes.append(Node(name, _class(entry), c, [h[0] for h in hist]))
    return source_order(nodes, outputs[0]), input_name or inputs[0], shape, outputs[0]


def source_order(nodes: list[Node], output: str) -> list[Node]:
    """The layers in depth-first order from the output, each input's chain before the next input's
    (the order PyTorch, Caffe and the IR list a block's branches; Keras sorts by depth instead).
    Layers the output does not depend on follow in Keras' order."""
    by_name, done, order = {n.name: n for n in nodes}, set(), []
    stack = [(output, False)]
    while stack:
        name, expanded = stack.pop()
        if name in done or name not in by_name:
            continue
        if expanded:
            done.add(name)
            order.append(by_name[name])
            continue
        stack.append((name, True))
        stack.extend((src, False) for src in reversed(by_name[name].inputs) if src not in done)
    return order + [n for n in nodes if n.name not in done]


def _problems(nodes: list[Node], input_name: str) -> list[str]:
    """Every layer the reader cannot take, from the config alone."""
    consumers: dict[str, list[str]] = {}
    for node in nodes:
        for src in node.inputs:
            consumers.setdefault(src, []).append(node.cls)
    bad = []
    for node in nodes:
        if node.cls == "(shared)":
            bad.append(f"{node.name} (a layer called more than once, or a multi-output layer's output)")
        elif node.cls in MODEL_CLASSES:
            bad.append(f"{node.name} ({node.cls}: a nested model; save the model with its layers inline)")
        elif node.cls not in CONVERTERS:
            bad.append(f"{node.name} ({node.cls})")
        elif (why := LIMITS[node.cls](node, consumers.get(node.name, []))):
            bad.append(f"{node.name} ({node.cls}: {why})")
    return bad


def _input_chw(shape, input_size: tuple[int, int] | None, path: Path, notes: list[str]) -> tuple[int, int, int]:
    if not shape or len(shape) != 4:
        raise UnsupportedError(f"input shape {shape}: the IR takes one image batch (N, H, W, C)", path)
    _, h, w, c = shape
    if c is None:
        raise InputError("the input's channel count is not fixed", path)
    if input_size is not None:
        if (h, w) != (None, None) and (h, w) != tuple(input_size):
            raise InputError(f"--input-size {input_size[0]}x{input_size[1]}: the model's input is {h}×{w}", path)
        h, w = input_size
    elif h is None or w is None:
        h, w = 224, 224
        notes.append("input: the model takes any H×W; the IR fixes 224×224 (give --input-size for another)")
    return int(c), int(h), int(w)


def build_ir(kf: KerasFile, *, input_size=None, name: str | None = None) -> tuple[Graph, dict, list[str]]:
    """The IR graph and weights of a Keras file with a config; (graph, arrays, notes)."""
    path, notes = kf.path, []
    refuse_code(kf.config, path)
    nodes, input_name, shape, output = model_nodes(kf.config, path)
    bad = _problems(nodes, input_name)
    if bad:
        raise UnsupportedError(f"{len(bad)} unsupported Keras layer(s): {', '.join(bad)}", path)
    if kf.kind == "keras":
        order = [(e.get("name") or (e.get("config") or {}).get("name"), e.get("class_name"))
                 for e in _layer_configs(kf.config)]
        if kf.config.get("class_name") == "Sequential":  # Sequential.layers leaves its InputLayer out
            order = [o for o in order if o[1] != "InputLayer"]
        kf.set_layer_order(order)
    consumers: dict[str, list[str]] = {}
    for node in nodes:
        for src in node.inputs:
            consumers.setdefault(src, []).append(node.name)
    b = KerasBuilder(path, kf.weights, consumers, {n.name: n.cls for n in nodes})
    b.shapes["input"] = _input_chw(shape, input_size, path, notes)
    values: dict[str, Value] = {input_name: Value("input", b.shapes["input"])}
    for node in nodes:
        missing = [src for src in node.inputs if src not in values]
        if missing or not node.inputs:
            raise InputError(f"layer {node.name!r} reads {missing or 'nothing'}, which no earlier layer writes", path)
        xs = [values[src] for src in node.inputs]
        if any(x.pad for x in xs) and node.cls not in from_keras_pool.TAKES_PADDING:
            values[node.name] = b.refuse(node, "reads a ZeroPadding2D the IR cannot fold", xs[0])
            continue
        values[node.name] = CONVERTERS[node.cls](b, node, xs)
    if b.problems:
        raise UnsupportedError(f"{len(b.problems)} unsupported Keras layer(s): {', '.join(b.problems)}", path)
    graph = _graph(b, values, output, name or kf.config.get("config", {}).get("name") or path.stem, notes, path)
    return graph, b.arrays, notes


def _graph(b: KerasBuilder, values: dict[str, Value], output: str, name: str, notes: list[str],
           path: Path) -> Graph:
    layers = {l.name: l for l in b.layers}
    out = values[output].ir
    prob = None
    if out in layers and layers[out].kind == "softmax":
        prob, out = out, layers[out].inputs[0]
    if out not in layers or layers[out].kind != "dense":
        raise UnsupportedError(f"the model's output ({output!r}) is not a Dense layer's (or its softmax): the "
                               "IR holds classification networks", path)
    if prob is None:
        prob = b.add("prob", "softmax", [Value(out, b.shapes[out])], {"axis": 1}).ir
        notes.append(f"the model outputs logits ({output!r}); the IR adds their softmax 'prob'")
    blobs = {k: v.ir for k, v in values.items()
             if v.ir != "input" and k != output and v.pad is None and v.coeff is None}
    blobs.update({"logits": out, "prob": prob})
    flat = next((l for l in b.layers if l.kind == "flatten"), None)
    if flat is not None:  # the map the classifier flattens, named as the PyTorch and Caffe readers name it
        blobs.setdefault("pool5", _through_dropout(layers, flat.inputs[0]))
    feature = _through_dropout(layers, layers[out].inputs[0])
    if feature in layers and layers[feature].kind == "flatten":
        feature = _through_dropout(layers, layers[feature].inputs[0])
    named = [k for k, v in blobs.items() if v == feature and k not in ("logits", "prob")]
    feature_blob = "pool5" if "pool5" in named else named[-1] if named else "features"
    blobs.setdefault(feature_blob, feature)
    return Graph(name=name, input=InputSpec(shape=b.shapes["input"]), layers=b.layers, outputs=[out, prob],
                 blobs=blobs, keras_names=dict(b.keras_names), feature_blob=feature_blob)


def _through_dropout(layers: dict, name: str) -> str:
    while name in layers and layers[name].kind == "dropout":
        name = layers[name].inputs[0]
    return name


def default_preprocess(preprocess: Preprocess | None, preset: str, notes: list[str], why: str) -> Preprocess:
    """The given spec, else ``preset`` with a note that says so (a Keras file records none)."""
    if preprocess is not None:
        return preprocess
    notes.append(f"preprocessing: {why}; using the {preset} preset "
                 f"({PREPROCESS_PRESETS[preset].channel_order}, {PREPROCESS_PRESETS[preset].value_range}) — "
                 "give --preprocess or --mean/--std/--scale/--channel-order if the model was trained otherwise")
    return PREPROCESS_PRESETS[preset]


def provenance(path: Path, kf: KerasFile, notes: list[str], what: str) -> Provenance:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    versions = {"keras (file)": kf.keras_version} if kf.keras_version else {}
    return Provenance(source_file=path.name, source_sha256=digest.hexdigest(), source_format=f"keras ({kf.kind})",
                      reader=f"crossmodal.readers.from_keras ({what})", framework_versions=versions, notes=notes)


def read_keras(path: Path, *, preprocess: Preprocess | None = None, input_size: tuple[int, int] | None = None,
               arch: str | None = None) -> IRModel:
    """Read a ``.keras`` or Keras ``.h5`` file into an IR model (no Keras import, nothing run).

    ``arch``: for a weights-only HDF5 (Keras 2 ``save_weights``), the architecture its layer names
    belong to (:mod:`crossmodal.readers.from_keras_arch`); refused for a file with a config.
    """
    path = Path(path)
    with open_keras_file(path) as kf:
        if kf.config is None:
            from crossmodal.readers.from_keras_arch import read_weights_only
            return read_weights_only(kf, arch, preprocess=preprocess, input_size=input_size)
        if arch is not None:
            raise InputError(f"--arch {arch}: the file holds its own architecture (--arch goes with a "
                             "weights-only HDF5)", path)
        graph, arrays, notes = build_ir(kf, input_size=input_size)
        spec = default_preprocess(preprocess, "torchvision", notes, "a Keras file does not record it")
        graph.preprocess = spec
        graph.input = InputSpec(shape=graph.input.shape, channel_order=spec.channel_order,
                                value_range=spec.value_range)
        graph.provenance = provenance(path, kf, notes, kf.kind)
    model = IRModel(graph, arrays)
    validate(model)
    return model
