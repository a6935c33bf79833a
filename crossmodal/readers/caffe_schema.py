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
