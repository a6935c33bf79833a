"""The part of Caffe's ``caffe.proto`` (proto2, package ``caffe``) that the Places365 nets use.

The message classes are built at import time from a table in this module (no
``protoc``, no generated ``_pb2`` file, no Caffe install). Field numbers, types,
packing and defaults are Caffe's, so real ``.caffemodel``, ``.binaryproto`` and
``.prototxt`` files decode; messages and fields outside the table are skipped by
the binary parser and reported by the text parser (see :func:`parse_prototxt`).

Covered: ``NetParameter`` (``layer`` = 100, legacy ``layers`` = 2, ``input``,
``input_shape``, ``input_dim``), ``LayerParameter``, legacy ``V1LayerParameter``
(type as an enum, ``blobs`` = 6), ``BlobProto`` (``shape`` = 7, packed ``data`` = 5,
legacy ``num``/``channels``/``height``/``width`` = 1–4, ``double_data`` = 8),
``BlobShape`` (packed ``dim`` = 1) and the parameters of Convolution, Pooling,
InnerProduct, Dropout, ReLU, Softmax, LRN, Concat, Eltwise, BatchNorm, Scale (the
last two have no V1 form), Input, Data and ImageData (``transform_param``,
``data_param``, ``image_data_param``), Accuracy and loss layers, with ``ParamSpec``, ``FillerParameter``
and ``NetStateRule`` (``include``/``exclude``) so that deploy and train_val
prototxts parse as written.

Use :func:`message` (``message("NetParameter")()``) for a fresh message. The
table as ``.proto`` text is the checked-in ``caffe.proto`` beside this module
(:func:`proto_source`; a test keeps the two in sync).
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32,
    "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE,
}
_LABELS = {"optional": _F.LABEL_OPTIONAL, "repeated": _F.LABEL_REPEATED}

#: enum name → [(value name, number)] (top-level enums of caffe.proto, or Message.Enum)
ENUMS: dict[str, list[tuple[str, int]]] = {
    "Phase": [("TRAIN", 0), ("TEST", 1)],
    "FillerParameter.VarianceNorm": [("FAN_IN", 0), ("FAN_OUT", 1), ("AVERAGE", 2)],
    "ParamSpec.DimCheckMode": [("STRICT", 0), ("PERMISSIVE", 1)],
    "Engine": [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)],  # one per parameter in Caffe
    "PoolingParameter.PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)],
    "PoolingParameter.RoundMode": [("CEIL", 0), ("FLOOR", 1)],
    "DataParameter.DB": [("LEVELDB", 0), ("LMDB", 1)],
    "LossParameter.NormalizationMode": [("FULL", 0), ("VALID", 1), ("BATCH_SIZE", 2), ("NONE", 3)],
    "LRNParameter.NormRegion": [("ACROSS_CHANNELS", 0), ("WITHIN_CHANNEL", 1)],
    "EltwiseParameter.EltwiseOp": [("PROD", 0), ("SUM", 1), ("MAX", 2)],
    "V1LayerParameter.LayerType": [
        ("NONE", 0), ("ABSVAL", 35), ("ACCURACY", 1), ("ARGMAX", 30), ("BNLL", 2), ("CONCAT", 3),
        ("CONTRASTIVE_LOSS", 37), ("CONVOLUTION", 4), ("DATA", 5), ("DECONVOLUTION", 39),
        ("DROPOUT", 6), ("DUMMY_DATA", 32), ("EUCLIDEAN_LOSS", 7), ("ELTWISE", 25), ("EXP", 38),
        ("FLATTEN", 8), ("HDF5_DATA", 9), ("HDF5_OUTPUT", 10), ("HINGE_LOSS", 28), ("IM2COL", 11),
        ("IMAGE_DATA", 12), ("INFOGAIN_LOSS", 13), ("INNER_PRODUCT", 14), ("LRN", 15),
        ("MEMORY_DATA", 29), ("MULTINOMIAL_LOGISTIC_LOSS", 16), ("MVN", 34), ("POOLING", 17),
        ("POWER", 26), ("RELU", 18), ("SIGMOID", 19), ("SIGMOID_CROSS_ENTROPY_LOSS", 27),
        ("SILENCE", 36), ("SOFTMAX", 20), ("SOFTMAX_LOSS", 21), ("SPLIT", 22), ("SLICE", 33),
        ("TANH", 23), ("WINDOW_DATA", 24), ("THRESHOLD", 31),
    ],
}

# A field: (label, type, name, number[, default]); type is a scalar name above, a
# message name, or "enum:Name". Repeated numeric fields are unpacked unless marked
# "packed" (proto2 default; readers accept either encoding anyway).
MESSAGES: dict[str, list[tuple]] = {
    "BlobShape": [("repeated", "int64", "dim", 1, "packed")],
    "BlobProto": [
        ("optional", "BlobShape", "shape", 7),
        ("repeated", "float", "data", 5, "packed"),
        ("repeated", "float", "diff", 6, "packed"),
        ("repeated", "double", "double_data", 8, "packed"),
        ("repeated", "double", "double_diff", 9, "packed"),
        ("optional", "int32", "num", 1, "0"), ("optional", "int32", "channels", 2, "0"),
        ("optional", "int32", "height", 3, "0"), ("optional", "int32", "width", 4, "0"),
    ],
    "FillerParameter": [
        ("optional", "string", "type", 1, "constant"), ("optional", "float", "value", 2, "0"),
        ("optional", "float", "min", 3, "0"), ("optional", "float", "max", 4, "1"),
        ("optional", "float", "mean", 5, "0"), ("optional", "float", "std", 6, "1"),
        ("optional", "int32", "sparse", 7, "-1"),
        ("optional", "enum:FillerParameter.VarianceNorm", "variance_norm", 8, "FAN_IN"),
    ],
    "NetState": [
        ("optional", "enum:Phase", "phase", 1, "TEST"), ("optional", "int32", "level", 2, "0"),
        ("repeated", "string", "stage", 3),
    ],
    "NetStateRule": [
        ("optional", "enum:Phase", "phase", 1), ("optional", "int32", "min_level", 2),
        ("optional", "int32", "max_level", 3), ("repeated", "string", "stage", 4),
        ("repeated", "string", "not_stage", 5),
    ],
    "ParamSpec": [
        ("optional", "string", "name", 1), ("optional", "enum:ParamSpec.DimCheckMode", "share_mode", 2),
        ("optional", "float", "lr_mult", 3, "1"), ("optional", "float", "decay_mult", 4, "1"),
    ],
    "NetParameter": [
        ("optional", "string", "name", 1), ("repeated", "string", "input", 3),
        ("repeated", "BlobShape", "input_shape", 8), ("repeated", "int32", "input_dim", 4),
        ("optional", "bool", "force_backward", 5, "false"), ("optional", "NetState", "state", 6),
        ("optional", "bool", "debug_info", 7, "false"),
        ("repeated", "LayerParameter", "layer", 100),
        ("repeated", "V1LayerParameter", "layers", 2),
    ],
    "TransformationParameter": [
        ("optional", "float", "scale", 1, "1"), ("optional", "bool", "mirror", 2, "false"),
        ("optional", "uint32", "crop_size", 3, "0"), ("optional", "string", "mean_file", 4),
        ("repeated", "float", "mean_value", 5), ("optional", "bool", "force_color", 6, "false"),
        ("optional", "bool", "force_gray", 7, "false"),
    ],
    "LossParameter": [
        ("optional", "int32", "ignore_label", 1),
        ("optional", "enum:LossParameter.NormalizationMode", "normalization", 3, "VALID"),
        ("optional", "bool", "normalize", 2),
    ],
    "AccuracyParameter": [
        ("optional", "uint32", "top_k", 1, "1"), ("optional", "int32", "axis", 2, "1"),
        ("optional", "int32", "ignore_label", 3),
    ],
    "ConvolutionParameter": [
        ("optional", "uint32", "num_output", 1), ("optional", "bool", "bias_term", 2, "true"),
        ("repeated", "uint32", "pad", 3), ("repeated", "uint32", "kernel_size", 4),
        ("repeated", "uint32", "stride", 6), ("repeated", "uint32", "dilation", 18),
        ("optional", "uint32", "pad_h", 9, "0"), ("optional", "uint32", "pad_w", 10, "0"),
        ("optional", "uint32", "kernel_h", 11), ("optional", "uint32", "kernel_w", 12),
        ("optional", "uint32", "stride_h", 13), ("optional", "uint32", "stride_w", 14),
        ("optional", "uint32", "group", 5, "1"),
        ("optional", "FillerParameter", "weight_filler", 7),
        ("optional", "FillerParameter", "bias_filler", 8),
        ("optional", "enum:Engine", "engine", 15, "DEFAULT"), ("optional", "int32", "axis", 16, "1"),
        ("optional", "bool", "force_nd_im2col", 17, "false"),
    ],
    "DataParameter": [
        ("optional", "string", "source", 1), ("optional", "uint32", "batch_size", 4),
        ("optional", "uint32", "rand_skip", 7, "0"), ("optional", "enum:DataParameter.DB", "backend", 8, "LEVELDB"),
        ("optional", "float", "scale", 2, "1"), ("optional", "string", "mean_file", 3),
        ("optional", "uint32", "crop_size", 5, "0"), ("optional", "bool", "mirror", 6, "false"),
        ("optional", "bool", "force_encoded_color", 9, "false"), ("optional", "uint32", "prefetch", 10, "4"),
    ],
    "ImageDataParameter": [  # scale, mean_file, crop_size, mirror: deprecated copies of transform_param's
        ("optional", "string", "source", 1), ("optional", "uint32", "batch_size", 4, "1"),
        ("optional", "uint32", "rand_skip", 7, "0"), ("optional", "bool", "shuffle", 8, "false"),
        ("optional", "uint32", "new_height", 9, "0"), ("optional", "uint32", "new_width", 10, "0"),
        ("optional", "bool", "is_color", 11, "true"), ("optional", "float", "scale", 2, "1"),
        ("optional", "string", "mean_file", 3), ("optional", "uint32", "crop_size", 5, "0"),
        ("optional", "bool", "mirror", 6, "false"), ("optional", "string", "root_folder", 12),
    ],
    "DropoutParameter": [("optional", "float", "dropout_ratio", 1, "0.5")],
    "InnerProductParameter": [
        ("optional", "uint32", "num_output", 1), ("optional", "bool", "bias_term", 2, "true"),
        ("optional", "FillerParameter", "weight_filler", 3),
        ("optional", "FillerParameter", "bias_filler", 4),
        ("optional", "int32", "axis", 5, "1"), ("optional", "bool", "transpose", 6, "false"),
    ],
    "InputParameter": [("repeated", "BlobShape", "shape", 1)],
    "FlattenParameter": [("optional", "int32", "axis", 1, "1"), ("optional", "int32", "end_axis", 2, "-1")],
    "PoolingParameter": [
        ("optional", "enum:PoolingParameter.PoolMethod", "pool", 1, "MAX"),
        ("optional", "uint32", "pad", 4, "0"), ("optional", "uint32", "pad_h", 9, "0"),
        ("optional", "uint32", "pad_w", 10, "0"), ("optional", "uint32", "kernel_size", 2),
        ("optional", "uint32", "kernel_h", 5), ("optional", "uint32", "kernel_w", 6),
        ("optional", "uint32", "stride", 3, "1"), ("optional", "uint32", "stride_h", 7),
        ("optional", "uint32", "stride_w", 8), ("optional", "enum:Engine", "engine", 11, "DEFAULT"),
        ("optional", "bool", "global_pooling", 12, "false"),
        ("optional", "enum:PoolingParameter.RoundMode", "round_mode", 13, "CEIL"),  # BVLC master
    ],
    "ReLUParameter": [
        ("optional", "float", "negative_slope", 1, "0"), ("optional", "enum:Engine", "engine", 2, "DEFAULT"),
    ],
    "SoftmaxParameter": [
        ("optional", "enum:Engine", "engine", 1, "DEFAULT"), ("optional", "int32", "axis", 2, "1"),
    ],
    "LRNParameter": [
        ("optional", "uint32", "local_size", 1, "5"), ("optional", "float", "alpha", 2, "1"),
        ("optional", "float", "beta", 3, "0.75"),
        ("optional", "enum:LRNParameter.NormRegion", "norm_region", 4, "ACROSS_CHANNELS"),
        ("optional", "float", "k", 5, "1"), ("optional", "enum:Engine", "engine", 6, "DEFAULT"),
    ],
    "ConcatParameter": [("optional", "int32", "axis", 2, "1"), ("optional", "uint32", "concat_dim", 1, "1")],
    "EltwiseParameter": [
        ("optional", "enum:EltwiseParameter.EltwiseOp", "operation", 1, "SUM"),
        ("repeated", "float", "coeff", 2), ("optional", "bool", "stable_prod_grad", 3, "true"),
    ],
    "BatchNormParameter": [
        ("optional", "bool", "use_global_stats", 1), ("optional", "float", "moving_average_fraction", 2, "0.999"),
        ("optional", "float", "eps", 3, "1e-05"),
    ],
    "ScaleParameter": [
        ("optional", "int32", "axis", 1, "1"), ("optional", "int32", "num_axes", 2, "1"),
        ("optional", "FillerParameter", "filler", 3), ("optional", "bool", "bias_term", 4, "false"),
        ("optional", "FillerParameter", "bias_filler", 5),
    ],
    "LayerParameter": [
        ("optional", "string", "name", 1), ("optional", "string", "type", 2),
        ("repeated", "string", "bottom", 3), ("repeated", "string", "top", 4),
        ("optional", "enum:Phase", "phase", 10), ("repeated", "float", "loss_weight", 5),
        ("repeated", "ParamSpec", "param", 6), ("repeated", "BlobProto", "blobs", 7),
        ("repeated", "bool", "propagate_down", 11),
        ("repeated", "NetStateRule", "include", 8), ("repeated", "NetStateRule", "exclude", 9),
        ("optional", "TransformationParameter", "transform_param", 100),
        ("optional", "LossParameter", "loss_param", 101),
        ("optional", "AccuracyParameter", "accuracy_param", 102),
        ("optional", "BatchNormParameter", "batch_norm_param", 139),
        ("optional", "ConcatParameter", "concat_param", 104),
        ("optional", "ConvolutionParameter", "convolution_param", 106),
        ("optional", "DataParameter", "data_param", 107),
        ("optional", "DropoutParameter", "dropout_param", 108),
        ("optional", "EltwiseParameter", "eltwise_param", 110),
        ("optional", "FlattenParameter", "flatten_param", 135),
        ("optional", "ImageDataParameter", "image_data_param", 115),
        ("optional", "InnerProductParameter", "inner_product_param", 117),
        ("optional", "InputParameter", "input_param", 143),
        ("optional", "LRNParameter", "lrn_param", 118),
        ("optional", "PoolingParameter", "pooling_param", 121),
        ("optional", "ReLUParameter", "relu_param", 123),
        ("optional", "ScaleParameter", "scale_param", 142),
        ("optional", "SoftmaxParameter", "softmax_param", 125),
    ],
    "V1LayerParameter": [
        ("repeated", "string", "bottom", 2), ("repeated", "string", "top", 3),
        ("optional", "string", "name", 4),
        ("repeated", "NetStateRule", "include", 32), ("repeated", "NetStateRule", "exclude", 33),
        ("optional", "enum:V1LayerParameter.LayerType", "type", 5),
        ("repeated", "BlobProto", "blobs", 6), ("repeated", "string", "param", 1001),
        ("repeated", "enum:ParamSpec.DimCheckMode", "blob_share_mode", 1002),
        ("repeated", "float", "blobs_lr", 7), ("repeated", "float", "weight_decay", 8),
        ("repeated", "float", "loss_weight", 35),
        ("optional", "AccuracyParameter", "accuracy_param", 27),
        ("optional", "ConcatParameter", "concat_param", 9),
        ("optional", "ConvolutionParameter", "convolution_param", 10),
        ("optional", "DataParameter", "data_param", 11),
        ("optional", "DropoutParameter", "dropout_param", 12),
        ("optional", "EltwiseParameter", "eltwise_param", 24),
        ("optional", "LRNParameter", "lrn_param", 18),
        ("optional", "ImageDataParameter", "image_data_param", 15),
        ("optional", "InnerProductParameter", "inner_product_param", 17),
        ("optional", "PoolingParameter", "pooling_param", 19),
        ("optional", "ReLUParameter", "relu_param", 30),
        ("optional", "SoftmaxParameter", "softmax_param", 39),
        ("optional", "TransformationParameter", "transform_param", 36),
        ("optional", "LossParameter", "loss_param", 42),
    ],
}

#: V1 enum type → the LayerParameter type string (only the names the reader meets).
V1_TYPE_NAMES: dict[str, str] = {
    "CONVOLUTION": "Convolution", "POOLING": "Pooling", "INNER_PRODUCT": "InnerProduct",
    "RELU": "ReLU", "DROPOUT": "Dropout", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "ACCURACY": "Accuracy", "DATA": "Data", "IMAGE_DATA": "ImageData", "FLATTEN": "Flatten",
    "LRN": "LRN", "CONCAT": "Concat", "ELTWISE": "Eltwise", "SIGMOID": "Sigmoid", "TANH": "TanH",
    "SPLIT": "Split", "SLICE": "Slice", "DECONVOLUTION": "Deconvolution", "MEMORY_DATA": "MemoryData",
}

PACKAGE = "caffe"


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="crossmodal_caffe.proto", package=PACKAGE, syntax="proto2")
    top_enums = [e for e in ENUMS if "." not in e]
    for name in top_enums:
        enum = fdp.enum_type.add(name=name)
        for value, number in ENUMS[name]:
            enum.value.add(name=value, number=number)
    for msg_name, fields in MESSAGES.items():
        msg = fdp.message_type.add(name=msg_name)
        for enum_name in (e for e in ENUMS if e.startswith(msg_name + ".")):
            enum = msg.enum_type.add(name=enum_name.split(".", 1)[1])
            for value, number in ENUMS[enum_name]:
                enum.value.add(name=value, number=number)
        for label, ftype, fname, number, *extra in fields:
            field = msg.field.add(name=fname, number=number, label=_LABELS[label])
            if ftype in _TYPES:
                field.type = _TYPES[ftype]
            elif ftype.startswith("enum:"):
                field.type, field.type_name = _F.TYPE_ENUM, f".{PACKAGE}.{ftype[5:]}"
            else:
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{ftype}"
            for opt in extra:
                if opt == "packed":
                    field.options.packed = True
                else:
                    field.default_value = opt
    return fdp


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
_CLASSES = {name: message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in MESSAGES}


def proto_source() -> str:
    """The schema as ``.proto`` text (the checked-in ``caffe.proto`` is this, for reading)."""
    lines = ["// The subset of BVLC Caffe's caffe.proto that crossmodal reads (same field numbers,",
             "// types, packing and defaults). Generated from crossmodal/readers/caffe_schema.py",
             "// (proto_source()); the message classes are built from that table, not from this file.",
             'syntax = "proto2";', "", f"package {PACKAGE};", ""]

    def enum_lines(name: str, indent: str) -> list[str]:
        values = "; ".join(f"{v} = {n}" for v, n in ENUMS[name])
        return [f"{indent}enum {name.split('.')[-1]} {{ {values}; }}"]

    for name in (e for e in ENUMS if "." not in e):
        lines += enum_lines(name, "")
    for msg_name, fields in MESSAGES.items():
        lines += ["", f"message {msg_name} {{"]
        for enum_name in (e for e in ENUMS if e.startswith(msg_name + ".")):
            lines += enum_lines(enum_name, "  ")
        for label, ftype, fname, number, *extra in fields:
            opts = []
            for opt in extra:
                if opt == "packed":
                    opts.append("packed = true")
                else:
                    opts.append(f'default = "{opt}"' if ftype == "string" else f"default = {opt}")
            suffix = f" [{', '.join(opts)}]" if opts else ""
            lines.append(f"  {label} {ftype.removeprefix('enum:')} {fname} = {number}{suffix};")
        lines.append("}")
    return "\n".join(lines) + "\n"


def message(name: str):
    """The generated message class for ``name`` (e.g. ``"NetParameter"``)."""
    return _CLASSES[name]


def parse_prototxt(text: str, *, allow_unknown_field: bool = False):
    """Text-format ``NetParameter``; raises ``text_format.ParseError`` (with line, column)."""
    net = _CLASSES["NetParameter"]()
    text_format.Parse(text, net, allow_unknown_field=allow_unknown_field)
    return net


def v1_type_name(layer) -> str:
    """A legacy ``V1LayerParameter``'s type as the new string (``CONVOLUTION`` → ``Convolution``)."""
    enum_name = layer.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number[layer.type].name
    return V1_TYPE_NAMES.get(enum_name, enum_name)


# --- binary files: .caffemodel (NetParameter) and .binaryproto (BlobProto) ---------------------
#
# A caffemodel is one NetParameter; ~all of its bytes are the packed float ``data`` of
# the BlobProtos inside ``layer`` (100) / ``layers`` (2). ``decode_caffemodel`` walks the
# wire format itself down to those fields and hands every *other* byte (names, types,
# parameters, shapes) to the protobuf classes above; the float data become NumPy views
# of the file buffer (no copy). ``decode_caffemodel_protobuf`` is the plain protobuf
# route (``ParseFromString`` + ``np.array``), kept as the cross-check in the tests.

class WireError(ValueError):
    """The bytes are not valid protobuf wire format (truncated or corrupt)."""


_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError(f"varint runs past byte {end}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError(f"varint longer than 10 bytes at byte {pos}")


def wire_fields(buf, start: int, end: int):
    """Yield ``(number, wire_type, field_start, value_start, value_end)`` for each field
    of the message in ``buf[start:end]``; groups (unused by Caffe) are refused."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {field_start}")
        value_start = pos
        if wire == _WIRE_VARINT:
            _, pos = _varint(buf, pos, end)
        elif wire == _WIRE_I64:
            pos += 8
        elif wire == _WIRE_LEN:
            length, pos = _varint(buf, pos, end)
            value_start, pos = pos, pos + length
        elif wire == _WIRE_I32:
            pos += 4
        else:
            raise WireError(f"wire type {wire} at byte {field_start}")
        if pos > end:
            raise WireError(f"field {number} at byte {field_start} runs past byte {end}")
        yield number, wire, field_start, value_start, pos


def parse_binary(name: str, data: bytes):
    """``message(name).FromString(data)``, raising :class:`WireError` on bad bytes."""
    from google.protobuf.message import DecodeError
    try:
        return _CLASSES[name].FromString(data)
    except DecodeError as exc:
        raise WireError(f"not a valid {name} ({exc})") from None


def blob_shape(meta) -> tuple[int, ...]:
    """A BlobProto's shape: ``shape.dim``, else legacy (num, channels, height, width)."""
    if meta.HasField("shape"):
        return tuple(int(d) for d in meta.shape.dim)
    return tuple(int(v) for v in (meta.num, meta.channels, meta.height, meta.width))


def _shaped(data, meta, where: str):
    import numpy as np
    shape = blob_shape(meta)
    if not meta.HasField("shape") and not any(shape) and data.size:
        shape = (data.size,)  # no shape recorded at all: a flat vector
    if int(np.prod(shape)) != data.size:
        raise WireError(f"{where}: {data.size} values for shape {shape}")
    return data.reshape(shape)


def decode_blob(buf, start: int, end: int, where: str = "blob"):
    """One BlobProto in ``buf[start:end]`` → float32 array of its shape (a view when the
    data is packed float, as Caffe writes it; ``diff`` is skipped)."""
    import numpy as np

    rest, floats, doubles, unpacked = bytearray(), [], [], False
    for number, wire, fstart, vstart, vend in wire_fields(buf, start, end):
        if number in (5, 8):
            if wire != _WIRE_LEN:
                unpacked = True
            else:
                (floats if number == 5 else doubles).append((vstart, vend))
        elif number not in (6, 9):
            rest += buf[fstart:vend]
    if unpacked:  # legal but unusual: let protobuf gather the values
        msg = parse_binary("BlobProto", bytes(buf[start:end]))
        data = np.array(msg.data if len(msg.data) else msg.double_data, dtype=np.float32)
        return _shaped(data, msg, where)
    meta = parse_binary("BlobProto", bytes(rest))
    chunks, dtype = (floats, "<f4") if floats or not doubles else (doubles, "<f8")
    size = np.dtype(dtype).itemsize
    parts = []
    for vstart, vend in chunks:
        if (vend - vstart) % size:
            raise WireError(f"{where}: packed data of {vend - vstart} bytes is not whole {dtype} values")
        parts.append(np.frombuffer(buf, dtype=dtype, count=(vend - vstart) // size, offset=vstart))
    data = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, dtype)
    if data.dtype != np.float32:
        data = data.astype(np.float32)
    return _shaped(data, meta, where)


def decode_caffemodel(buf) -> tuple[list[tuple[object, list]], str]:
    """A binary NetParameter → ([(layer message without blobs, [float32 arrays])], encoding).

    ``encoding`` is ``"layer"`` (LayerParameter, field 100) or ``"layers"`` (legacy
    V1LayerParameter, field 2). Arrays are views of ``buf`` (pass a ``bytearray`` for
    writable ones). Raises :class:`WireError` on bytes that are not a NetParameter.
    """
    out, kinds = [], set()
    for number, wire, _, vstart, vend in wire_fields(buf, 0, len(buf)):
        if number not in (100, 2):
            continue
        if wire != _WIRE_LEN:
            raise WireError(f"layer field {number} has wire type {wire}")
        kinds.add("layer" if number == 100 else "layers")
        cls, blob_no = ("LayerParameter", 7) if number == 100 else ("V1LayerParameter", 6)
        rest, blobs = bytearray(), []
        for n, w, fstart, bstart, bend in wire_fields(buf, vstart, vend):
            if n == blob_no and w == _WIRE_LEN:
                blobs.append((bstart, bend))
            else:
                rest += buf[fstart:bend]
        layer = parse_binary(cls, bytes(rest))
        arrays = [decode_blob(buf, s, e, f"layer {layer.name!r} blob {i}") for i, (s, e) in enumerate(blobs)]
        out.append((layer, arrays))
    return out, "+".join(sorted(kinds)) or "none"


def decode_caffemodel_protobuf(data: bytes) -> tuple[list[tuple[object, list]], str]:
    """The same as :func:`decode_caffemodel` through ``ParseFromString`` (copies every value)."""
    import numpy as np

    net = parse_binary("NetParameter", data)
    out = []
    for layers, kind in ((net.layer, "layer"), (net.layers, "layers")):
        for layer in layers:
            arrays = [_shaped(np.array(b.data if len(b.data) else b.double_data, dtype=np.float32), b,
                              f"layer {layer.name!r} blob {i}") for i, b in enumerate(layer.blobs)]
            del layer.blobs[:]
            out.append((layer, arrays))
    kinds = [k for k, ls in (("layer", net.layer), ("layers", net.layers)) if len(ls)]
    return out, "+".join(kinds) or "none"


def decode_mean_blob(data: bytes):
    """A ``.binaryproto`` BlobProto (mean image) → float32 array of its shape."""
    return decode_blob(data, 0, len(data), "mean blob")
