"""Caffe field numbers pinned against BVLC Caffe's own ``caffe.proto``, not against our schema.

``UPSTREAM`` and ``UPSTREAM_ENUMS`` are transcribed from ``src/caffe/proto/caffe.proto`` of
BVLC/caffe master (commit 9b891540183ddc834a02b2bd81b31afae71b2153, 2020-02-13; the file's git
blob 3dcad697f6dc6cad278c8f4e4b9dc0db47861045), each row with the line it is on there. The tests
build protobuf classes from that table with protobuf's own runtime (descriptor_pb2 → message
factory), encode with them and decode with the project's reader (``caffe_schema``'s classes and
its hand-written wire walker ``decode_caffemodel``), for the new (``layer`` = 100) and the legacy
V1 (``layers`` = 2) encodings. Every field the schema declares must be in the table.

The table also holds the LayerParameter fields of layer kinds the reader will grow to (LRN,
Concat, Eltwise, BatchNorm, Scale, Bias): they are checked as soon as the schema declares them.
"""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from crossmodal.readers import caffe_schema as schema
from crossmodal.readers import caffe_wire

#: (upstream line, message, label, type, field, number[, "packed"]); type: a scalar, a message,
#: or "enum:<Enum path>" (Caffe nests most enums in their message, e.g. each parameter's Engine).
UPSTREAM = [
    # message BlobShape
    (7, "BlobShape", "repeated", "int64", "dim", 1, "packed"),
    # message BlobProto
    (11, "BlobProto", "optional", "BlobShape", "shape", 7),
    (12, "BlobProto", "repeated", "float", "data", 5, "packed"),
    (13, "BlobProto", "repeated", "float", "diff", 6, "packed"),
    (14, "BlobProto", "repeated", "double", "double_data", 8, "packed"),
    (15, "BlobProto", "repeated", "double", "double_diff", 9, "packed"),
    (18, "BlobProto", "optional", "int32", "num", 1),
    (19, "BlobProto", "optional", "int32", "channels", 2),
    (20, "BlobProto", "optional", "int32", "height", 3),
    (21, "BlobProto", "optional", "int32", "width", 4),
    # message FillerParameter
    (45, "FillerParameter", "optional", "string", "type", 1),
    (46, "FillerParameter", "optional", "float", "value", 2),
    (47, "FillerParameter", "optional", "float", "min", 3),
    (48, "FillerParameter", "optional", "float", "max", 4),
    (49, "FillerParameter", "optional", "float", "mean", 5),
    (50, "FillerParameter", "optional", "float", "std", 6),
    (53, "FillerParameter", "optional", "int32", "sparse", 7),
    (61, "FillerParameter", "optional", "enum:FillerParameter.VarianceNorm", "variance_norm", 8),
    # message NetState
    (274, "NetState", "optional", "enum:Phase", "phase", 1),
    (275, "NetState", "optional", "int32", "level", 2),
    (276, "NetState", "repeated", "string", "stage", 3),
    # message NetStateRule
    (282, "NetStateRule", "optional", "enum:Phase", "phase", 1),
    (286, "NetStateRule", "optional", "int32", "min_level", 2),
    (287, "NetStateRule", "optional", "int32", "max_level", 3),
    (293, "NetStateRule", "repeated", "string", "stage", 4),
    (294, "NetStateRule", "repeated", "string", "not_stage", 5),
    # message ParamSpec
    (303, "ParamSpec", "optional", "string", "name", 1),
    (307, "ParamSpec", "optional", "enum:ParamSpec.DimCheckMode", "share_mode", 2),
    (316, "ParamSpec", "optional", "float", "lr_mult", 3),
    (319, "ParamSpec", "optional", "float", "decay_mult", 4),
    # message NetParameter
    (65, "NetParameter", "optional", "string", "name", 1),
    (67, "NetParameter", "repeated", "string", "input", 3),
    (69, "NetParameter", "repeated", "BlobShape", "input_shape", 8),
    (75, "NetParameter", "repeated", "int32", "input_dim", 4),
    (80, "NetParameter", "optional", "bool", "force_backward", 5),
    (84, "NetParameter", "optional", "NetState", "state", 6),
    (88, "NetParameter", "optional", "bool", "debug_info", 7),
    (92, "NetParameter", "repeated", "LayerParameter", "layer", 100),
    (95, "NetParameter", "repeated", "V1LayerParameter", "layers", 2),
    # message TransformationParameter
    (432, "TransformationParameter", "optional", "float", "scale", 1),
    (434, "TransformationParameter", "optional", "bool", "mirror", 2),
    (436, "TransformationParameter", "optional", "uint32", "crop_size", 3),
    (438, "TransformationParameter", "optional", "string", "mean_file", 4),
    (442, "TransformationParameter", "repeated", "float", "mean_value", 5),
    (444, "TransformationParameter", "optional", "bool", "force_color", 6),
    (446, "TransformationParameter", "optional", "bool", "force_gray", 7),
    # message LossParameter
    (452, "LossParameter", "optional", "int32", "ignore_label", 1),
    (471, "LossParameter", "optional", "enum:LossParameter.NormalizationMode", "normalization", 3),
    (475, "LossParameter", "optional", "bool", "normalize", 2),
    # message AccuracyParameter
    (485, "AccuracyParameter", "optional", "uint32", "top_k", 1),
    (492, "AccuracyParameter", "optional", "int32", "axis", 2),
    (495, "AccuracyParameter", "optional", "int32", "ignore_label", 3),
    # message ConvolutionParameter
    (593, "ConvolutionParameter", "optional", "uint32", "num_output", 1),
    (594, "ConvolutionParameter", "optional", "bool", "bias_term", 2),
    (598, "ConvolutionParameter", "repeated", "uint32", "pad", 3),
    (599, "ConvolutionParameter", "repeated", "uint32", "kernel_size", 4),
    (600, "ConvolutionParameter", "repeated", "uint32", "stride", 6),
    (604, "ConvolutionParameter", "repeated", "uint32", "dilation", 18),
    (608, "ConvolutionParameter", "optional", "uint32", "pad_h", 9),
    (609, "ConvolutionParameter", "optional", "uint32", "pad_w", 10),
    (610, "ConvolutionParameter", "optional", "uint32", "kernel_h", 11),
    (611, "ConvolutionParameter", "optional", "uint32", "kernel_w", 12),
    (612, "ConvolutionParameter", "optional", "uint32", "stride_h", 13),
    (613, "ConvolutionParameter", "optional", "uint32", "stride_w", 14),
    (615, "ConvolutionParameter", "optional", "uint32", "group", 5),
    (617, "ConvolutionParameter", "optional", "FillerParameter", "weight_filler", 7),
    (618, "ConvolutionParameter", "optional", "FillerParameter", "bias_filler", 8),
    (624, "ConvolutionParameter", "optional", "enum:ConvolutionParameter.Engine", "engine", 15),
    (635, "ConvolutionParameter", "optional", "int32", "axis", 16),
    (642, "ConvolutionParameter", "optional", "bool", "force_nd_im2col", 17),
    # message DataParameter
    (669, "DataParameter", "optional", "string", "source", 1),
    (671, "DataParameter", "optional", "uint32", "batch_size", 4),
    (677, "DataParameter", "optional", "uint32", "rand_skip", 7),
    (678, "DataParameter", "optional", "enum:DataParameter.DB", "backend", 8),
    (682, "DataParameter", "optional", "float", "scale", 2),
    (683, "DataParameter", "optional", "string", "mean_file", 3),
    (686, "DataParameter", "optional", "uint32", "crop_size", 5),
    (689, "DataParameter", "optional", "bool", "mirror", 6),
    (691, "DataParameter", "optional", "bool", "force_encoded_color", 9),
    (694, "DataParameter", "optional", "uint32", "prefetch", 10),
    # message ImageDataParameter
    (808, "ImageDataParameter", "optional", "string", "source", 1),
    (810, "ImageDataParameter", "optional", "uint32", "batch_size", 4),
    (815, "ImageDataParameter", "optional", "uint32", "rand_skip", 7),
    (817, "ImageDataParameter", "optional", "bool", "shuffle", 8),
    (819, "ImageDataParameter", "optional", "uint32", "new_height", 9),
    (820, "ImageDataParameter", "optional", "uint32", "new_width", 10),
    (822, "ImageDataParameter", "optional", "bool", "is_color", 11),
    (826, "ImageDataParameter", "optional", "float", "scale", 2),
    (827, "ImageDataParameter", "optional", "string", "mean_file", 3),
    (830, "ImageDataParameter", "optional", "uint32", "crop_size", 5),
    (833, "ImageDataParameter", "optional", "bool", "mirror", 6),
    (834, "ImageDataParameter", "optional", "string", "root_folder", 12),
    # message DropoutParameter
    (698, "DropoutParameter", "optional", "float", "dropout_ratio", 1),
    # message InnerProductParameter
    (844, "InnerProductParameter", "optional", "uint32", "num_output", 1),
    (845, "InnerProductParameter", "optional", "bool", "bias_term", 2),
    (846, "InnerProductParameter", "optional", "FillerParameter", "weight_filler", 3),
    (847, "InnerProductParameter", "optional", "FillerParameter", "bias_filler", 4),
    (852, "InnerProductParameter", "optional", "int32", "axis", 5),
    (857, "InnerProductParameter", "optional", "bool", "transpose", 6),
    # message InputParameter
    (865, "InputParameter", "repeated", "BlobShape", "shape", 1),
    # message FlattenParameter
    (770, "FlattenParameter", "optional", "int32", "axis", 1),
    (775, "FlattenParameter", "optional", "int32", "end_axis", 2),
    # message PoolingParameter
    (925, "PoolingParameter", "optional", "enum:PoolingParameter.PoolMethod", "pool", 1),
    (928, "PoolingParameter", "optional", "uint32", "pad", 4),
    (929, "PoolingParameter", "optional", "uint32", "pad_h", 9),
    (930, "PoolingParameter", "optional", "uint32", "pad_w", 10),
    (931, "PoolingParameter", "optional", "uint32", "kernel_size", 2),
    (932, "PoolingParameter", "optional", "uint32", "kernel_h", 5),
    (933, "PoolingParameter", "optional", "uint32", "kernel_w", 6),
    (934, "PoolingParameter", "optional", "uint32", "stride", 3),
    (935, "PoolingParameter", "optional", "uint32", "stride_h", 7),
    (936, "PoolingParameter", "optional", "uint32", "stride_w", 8),
    (942, "PoolingParameter", "optional", "enum:PoolingParameter.Engine", "engine", 11),
    (945, "PoolingParameter", "optional", "bool", "global_pooling", 12),
    (951, "PoolingParameter", "optional", "enum:PoolingParameter.RoundMode", "round_mode", 13),
    # message ReLUParameter
    (1028, "ReLUParameter", "optional", "float", "negative_slope", 1),
    (1034, "ReLUParameter", "optional", "enum:ReLUParameter.Engine", "engine", 2),
    # message SoftmaxParameter
    (1165, "SoftmaxParameter", "optional", "enum:SoftmaxParameter.Engine", "engine", 1),
    (1170, "SoftmaxParameter", "optional", "int32", "axis", 2),
    # message LayerParameter
    (327, "LayerParameter", "optional", "string", "name", 1),
    (328, "LayerParameter", "optional", "string", "type", 2),
    (329, "LayerParameter", "repeated", "string", "bottom", 3),
    (330, "LayerParameter", "repeated", "string", "top", 4),
    (333, "LayerParameter", "optional", "enum:Phase", "phase", 10),
    (338, "LayerParameter", "repeated", "float", "loss_weight", 5),
    (342, "LayerParameter", "repeated", "ParamSpec", "param", 6),
    (345, "LayerParameter", "repeated", "BlobProto", "blobs", 7),
    (354, "LayerParameter", "repeated", "bool", "propagate_down", 11),
    (362, "LayerParameter", "repeated", "NetStateRule", "include", 8),
    (363, "LayerParameter", "repeated", "NetStateRule", "exclude", 9),
    (366, "LayerParameter", "optional", "TransformationParameter", "transform_param", 100),
    (369, "LayerParameter", "optional", "LossParameter", "loss_param", 101),
    (377, "LayerParameter", "optional", "AccuracyParameter", "accuracy_param", 102),
    (379, "LayerParameter", "optional", "BatchNormParameter", "batch_norm_param", 139),
    (380, "LayerParameter", "optional", "BiasParameter", "bias_param", 141),
    (382, "LayerParameter", "optional", "ConcatParameter", "concat_param", 104),
    (384, "LayerParameter", "optional", "ConvolutionParameter", "convolution_param", 106),
    (386, "LayerParameter", "optional", "DataParameter", "data_param", 107),
    (387, "LayerParameter", "optional", "DropoutParameter", "dropout_param", 108),
    (389, "LayerParameter", "optional", "EltwiseParameter", "eltwise_param", 110),
    (393, "LayerParameter", "optional", "FlattenParameter", "flatten_param", 135),
    (397, "LayerParameter", "optional", "ImageDataParameter", "image_data_param", 115),
    (399, "LayerParameter", "optional", "InnerProductParameter", "inner_product_param", 117),
    (400, "LayerParameter", "optional", "InputParameter", "input_param", 143),
    (402, "LayerParameter", "optional", "LRNParameter", "lrn_param", 118),
    (406, "LayerParameter", "optional", "PoolingParameter", "pooling_param", 121),
    (412, "LayerParameter", "optional", "ReLUParameter", "relu_param", 123),
    (414, "LayerParameter", "optional", "ScaleParameter", "scale_param", 142),
    (416, "LayerParameter", "optional", "SoftmaxParameter", "softmax_param", 125),
    # message V1LayerParameter
    (1256, "V1LayerParameter", "repeated", "string", "bottom", 2),
    (1257, "V1LayerParameter", "repeated", "string", "top", 3),
    (1258, "V1LayerParameter", "optional", "string", "name", 4),
    (1259, "V1LayerParameter", "repeated", "NetStateRule", "include", 32),
    (1260, "V1LayerParameter", "repeated", "NetStateRule", "exclude", 33),
    (1303, "V1LayerParameter", "optional", "enum:V1LayerParameter.LayerType", "type", 5),
    (1304, "V1LayerParameter", "repeated", "BlobProto", "blobs", 6),
    (1305, "V1LayerParameter", "repeated", "string", "param", 1001),
    (1306, "V1LayerParameter", "repeated", "enum:V1LayerParameter.DimCheckMode", "blob_share_mode", 1002),
    (1311, "V1LayerParameter", "repeated", "float", "blobs_lr", 7),
    (1312, "V1LayerParameter", "repeated", "float", "weight_decay", 8),
    (1313, "V1LayerParameter", "repeated", "float", "loss_weight", 35),
    (1314, "V1LayerParameter", "optional", "AccuracyParameter", "accuracy_param", 27),
    (1316, "V1LayerParameter", "optional", "ConcatParameter", "concat_param", 9),
    (1318, "V1LayerParameter", "optional", "ConvolutionParameter", "convolution_param", 10),
    (1319, "V1LayerParameter", "optional", "DataParameter", "data_param", 11),
    (1320, "V1LayerParameter", "optional", "DropoutParameter", "dropout_param", 12),
    (1322, "V1LayerParameter", "optional", "EltwiseParameter", "eltwise_param", 24),
    (1327, "V1LayerParameter", "optional", "ImageDataParameter", "image_data_param", 15),
    (1329, "V1LayerParameter", "optional", "InnerProductParameter", "inner_product_param", 17),
    (1330, "V1LayerParameter", "optional", "LRNParameter", "lrn_param", 18),
    (1333, "V1LayerParameter", "optional", "PoolingParameter", "pooling_param", 19),
    (1335, "V1LayerParameter", "optional", "ReLUParameter", "relu_param", 30),
    (1337, "V1LayerParameter", "optional", "SoftmaxParameter", "softmax_param", 39),
    (1342, "V1LayerParameter", "optional", "TransformationParameter", "transform_param", 36),
    (1343, "V1LayerParameter", "optional", "LossParameter", "loss_param", 42),
    # message LRNParameter
    (880, "LRNParameter", "optional", "uint32", "local_size", 1),
    (881, "LRNParameter", "optional", "float", "alpha", 2),
    (882, "LRNParameter", "optional", "float", "beta", 3),
    (887, "LRNParameter", "optional", "enum:LRNParameter.NormRegion", "norm_region", 4),
    (888, "LRNParameter", "optional", "float", "k", 5),
    (894, "LRNParameter", "optional", "enum:LRNParameter.Engine", "engine", 6),
    # message ConcatParameter
    (520, "ConcatParameter", "optional", "int32", "axis", 2),
    (523, "ConcatParameter", "optional", "uint32", "concat_dim", 1),
    # message EltwiseParameter
    (726, "EltwiseParameter", "optional", "enum:EltwiseParameter.EltwiseOp", "operation", 1),
    (727, "EltwiseParameter", "repeated", "float", "coeff", 2),
    (731, "EltwiseParameter", "optional", "bool", "stable_prod_grad", 3),
    # message BatchNormParameter
    (534, "BatchNormParameter", "optional", "bool", "use_global_stats", 1),
    (542, "BatchNormParameter", "optional", "float", "moving_average_fraction", 2),
    (545, "BatchNormParameter", "optional", "float", "eps", 3),
    # message ScaleParameter
    (1115, "ScaleParameter", "optional", "int32", "axis", 1),
    (1123, "ScaleParameter", "optional", "int32", "num_axes", 2),
    (1130, "ScaleParameter", "optional", "FillerParameter", "filler", 3),
    (1134, "ScaleParameter", "optional", "bool", "bias_term", 4),
    (1135, "ScaleParameter", "optional", "FillerParameter", "bias_filler", 5),
    # message BiasParameter
    (562, "BiasParameter", "optional", "int32", "axis", 1),
    (570, "BiasParameter", "optional", "int32", "num_axes", 2),
    (577, "BiasParameter", "optional", "FillerParameter", "filler", 3),
]

#: enum path → [(upstream line, value name, number)]
UPSTREAM_ENUMS = {
    "Phase": [(269, "TRAIN", 0), (270, "TEST", 1)],
    "FillerParameter.VarianceNorm": [(57, "FAN_IN", 0), (58, "FAN_OUT", 1), (59, "AVERAGE", 2)],
    "ParamSpec.DimCheckMode": [(310, "STRICT", 0), (312, "PERMISSIVE", 1)],
    "LossParameter.NormalizationMode": [
        (460, "FULL", 0), (463, "VALID", 1), (465, "BATCH_SIZE", 2), (467, "NONE", 3),
    ],
    "ConvolutionParameter.Engine": [(620, "DEFAULT", 0), (621, "CAFFE", 1), (622, "CUDNN", 2)],
    "DataParameter.DB": [(665, "LEVELDB", 0), (666, "LMDB", 1)],
    "PoolingParameter.PoolMethod": [(921, "MAX", 0), (922, "AVE", 1), (923, "STOCHASTIC", 2)],
    "PoolingParameter.Engine": [(938, "DEFAULT", 0), (939, "CAFFE", 1), (940, "CUDNN", 2)],
    "PoolingParameter.RoundMode": [(948, "CEIL", 0), (949, "FLOOR", 1)],
    "ReLUParameter.Engine": [(1030, "DEFAULT", 0), (1031, "CAFFE", 1), (1032, "CUDNN", 2)],
    "SoftmaxParameter.Engine": [(1161, "DEFAULT", 0), (1162, "CAFFE", 1), (1163, "CUDNN", 2)],
    "V1LayerParameter.LayerType": [
        (1262, "NONE", 0), (1263, "ABSVAL", 35), (1264, "ACCURACY", 1), (1265, "ARGMAX", 30),
        (1266, "BNLL", 2), (1267, "CONCAT", 3), (1268, "CONTRASTIVE_LOSS", 37), (1269, "CONVOLUTION", 4),
        (1270, "DATA", 5), (1271, "DECONVOLUTION", 39), (1272, "DROPOUT", 6), (1273, "DUMMY_DATA", 32),
        (1274, "EUCLIDEAN_LOSS", 7), (1275, "ELTWISE", 25), (1276, "EXP", 38), (1277, "FLATTEN", 8),
        (1278, "HDF5_DATA", 9), (1279, "HDF5_OUTPUT", 10), (1280, "HINGE_LOSS", 28), (1281, "IM2COL", 11),
        (1282, "IMAGE_DATA", 12), (1283, "INFOGAIN_LOSS", 13), (1284, "INNER_PRODUCT", 14), (1285, "LRN", 15),
        (1286, "MEMORY_DATA", 29), (1287, "MULTINOMIAL_LOGISTIC_LOSS", 16), (1288, "MVN", 34),
        (1289, "POOLING", 17), (1290, "POWER", 26), (1291, "RELU", 18), (1292, "SIGMOID", 19),
        (1293, "SIGMOID_CROSS_ENTROPY_LOSS", 27), (1294, "SILENCE", 36), (1295, "SOFTMAX", 20),
        (1296, "SOFTMAX_LOSS", 21), (1297, "SPLIT", 22), (1298, "SLICE", 33), (1299, "TANH", 23),
        (1300, "WINDOW_DATA", 24), (1301, "THRESHOLD", 31),
    ],
    "V1LayerParameter.DimCheckMode": [(1308, "STRICT", 0), (1309, "PERMISSIVE", 1)],
    "LRNParameter.NormRegion": [(884, "ACROSS_CHANNELS", 0), (885, "WITHIN_CHANNEL", 1)],
    "LRNParameter.Engine": [(890, "DEFAULT", 0), (891, "CAFFE", 1), (892, "CUDNN", 2)],
    "EltwiseParameter.EltwiseOp": [(722, "PROD", 0), (723, "SUM", 1), (724, "MAX", 2)],
}

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"string": _F.TYPE_STRING, "bool": _F.TYPE_BOOL, "int32": _F.TYPE_INT32, "int64": _F.TYPE_INT64,
            "uint32": _F.TYPE_UINT32, "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE}
_LABELS = {"optional": _F.LABEL_OPTIONAL, "repeated": _F.LABEL_REPEATED}


def _upstream_classes() -> dict:
    """Message classes built from ``UPSTREAM`` alone (package ``upstream``), by name."""
    fdp = descriptor_pb2.FileDescriptorProto(name="upstream_caffe.proto", package="upstream", syntax="proto2")
    for path, values in UPSTREAM_ENUMS.items():
        if "." not in path:
            enum = fdp.enum_type.add(name=path)
            for _, name, number in values:
                enum.value.add(name=name, number=number)
    messages = {}
    for _, msg, *_ in UPSTREAM:
        if msg not in messages:
            messages[msg] = fdp.message_type.add(name=msg)
            for path, values in UPSTREAM_ENUMS.items():
                if path.startswith(msg + "."):
                    enum = messages[msg].enum_type.add(name=path.split(".", 1)[1])
                    for _, name, number in values:
                        enum.value.add(name=name, number=number)
    for _, msg, label, ftype, name, number, *extra in UPSTREAM:
        field = messages[msg].field.add(name=name, number=number, label=_LABELS[label])
        if ftype in _SCALARS:
            field.type = _SCALARS[ftype]
        elif ftype.startswith("enum:"):
            field.type, field.type_name = _F.TYPE_ENUM, ".upstream." + ftype[5:]
        else:
            field.type, field.type_name = _F.TYPE_MESSAGE, ".upstream." + ftype
        if "packed" in extra:
            field.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {m: message_factory.GetMessageClass(pool.FindMessageTypeByName("upstream." + m)) for m in messages}


UP = _upstream_classes()
ROWS = {(msg, name): (label, ftype, number, extra) for _, msg, label, ftype, name, number, *extra in UPSTREAM}


def _schema_fields():
    for msg, fields in schema.MESSAGES.items():
        for label, ftype, name, number, *extra in fields:
            yield msg, label, ftype, name, number, extra


def test_the_table_is_a_faithful_transcription():
    """Line numbers ascend within a message and no (message, field) or number repeats."""
    seen_numbers = set()
    for _, msg, _, _, name, number, *_ in UPSTREAM:
        assert (msg, number) not in seen_numbers, (msg, name)
        seen_numbers.add((msg, number))
    assert len(ROWS) == len(UPSTREAM)
    for path, values in UPSTREAM_ENUMS.items():
        lines = [line for line, *_ in values]
        assert lines == sorted(lines) and len({n for *_, n in values}) == len(values), path


@pytest.mark.parametrize("msg, label, ftype, name, number, extra",
                         list(_schema_fields()), ids=[f"{m}.{n}" for m, _, _, n, _, _ in _schema_fields()])
def test_every_schema_field_matches_caffe(msg, label, ftype, name, number, extra):
    assert (msg, name) in ROWS, f"{msg}.{name} is not in BVLC caffe.proto (or not transcribed here)"
    up_label, up_type, up_number, up_extra = ROWS[(msg, name)]
    assert number == up_number, f"{msg}.{name} = {number}, Caffe says {up_number}"
    assert label == up_label
    if up_type.startswith("enum:"):
        assert ftype.startswith("enum:")
    else:
        assert ftype == up_type
    assert ("packed" in extra) == ("packed" in up_extra), f"{msg}.{name}: packing differs"


def _caffe_enum(schema_enum: str, msg: str) -> str:
    """The upstream enum a schema enum stands for (the schema shares one top-level Engine)."""
    return f"{msg}.Engine" if schema_enum == "Engine" else schema_enum


def test_every_schema_enum_value_matches_caffe():
    for msg, label, ftype, name, number, extra in _schema_fields():
        if not ftype.startswith("enum:"):
            continue
        ours = dict(schema.ENUMS[ftype[5:]])
        up_type = ROWS[(msg, name)][1][5:]
        # the same enum, or Caffe's copy of it in another message (V1's DimCheckMode, each Engine)
        assert up_type.split(".")[-1] == _caffe_enum(ftype[5:], msg).split(".")[-1], (msg, name, up_type)
        theirs = {value: number for _, value, number in UPSTREAM_ENUMS[up_type]}
        assert ours == theirs, f"{msg}.{name}: {ours} vs Caffe {theirs}"


# --------------------------------------------------------------------------- encode upstream, decode ours
def _fill(msg_name: str, seed: list[int], depth: int = 0):
    """An upstream message with every field the schema declares set to a distinct value."""
    cls = UP[msg_name]
    m = cls()
    known = {f[2] for f in schema.MESSAGES.get(msg_name, [])}
    for field in cls.DESCRIPTOR.fields:
        if field.name not in known or (msg_name in ("LayerParameter", "V1LayerParameter") and field.name == "blobs"):
            continue
        seed[0] += 1
        v = seed[0]
        repeated = field.is_repeated
        if field.type == field.TYPE_MESSAGE:
            if depth > 2:
                continue
            sub = _fill(field.message_type.name, seed, depth + 1)
            (getattr(m, field.name).add().CopyFrom(sub) if repeated else getattr(m, field.name).CopyFrom(sub))
            continue
        if field.type == field.TYPE_ENUM:
            numbers = [e.number for e in field.enum_type.values]
            vals = [numbers[(v + i) % len(numbers)] for i in range(2)]
        elif field.type == field.TYPE_STRING:
            vals = [f"{field.name}-{v}", f"{field.name}-{v}b"]
        elif field.type == field.TYPE_BOOL:
            vals = [not field.default_value, True]
        elif field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
            vals = [v + 0.25, v + 0.5]
        else:
            vals = [v + 1000, v + 2000]
        if repeated:
            getattr(m, field.name).extend(vals)
        else:
            setattr(m, field.name, vals[0])
    return m


def _as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, use_integers_for_enums=True)


@pytest.mark.parametrize("msg_name", sorted(set(schema.MESSAGES) & set(UP)))
def test_upstream_encoding_decodes_field_for_field(msg_name):
    """Bytes written from Caffe's numbers read back by the schema with every value in its own field."""
    up = _fill(msg_name, [0])
    assert up.ListFields(), msg_name
    ours = caffe_wire.parse_binary(msg_name, up.SerializeToString())
    assert _as_dict(ours) == _as_dict(up)
    # and nothing lands in an unknown field: the bytes re-encode identically
    assert ours.SerializeToString(deterministic=True) == up.SerializeToString(deterministic=True)


def _blob(cls_blob, values: np.ndarray, *, legacy: bool = False, double: bool = False):
    b = cls_blob()
    if legacy:
        b.num, b.channels, b.height, b.width = (1,) * (4 - values.ndim) + values.shape
    else:
        b.shape.dim.extend(values.shape)
    (b.double_data if double else b.data).extend(values.ravel().tolist())
    b.diff.extend([99.0] * values.size)  # gradients: ignored by the reader
    return b


@pytest.mark.parametrize("encoding", ["layer", "layers"])
def test_upstream_caffemodel_through_the_wire_walker(encoding):
    """A NetParameter from Caffe's numbers → decode_caffemodel (hand-written field numbers) and
    decode_caffemodel_protobuf: the same layers, parameters and blob values."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    fc = rng.standard_normal((5, 6)).astype(np.float32)
    net = UP["NetParameter"](name="pinned")
    if encoding == "layer":
        conv = net.layer.add(name="conv1", type="Convolution", bottom=["data"], top=["conv1"])
        conv.convolution_param.num_output, conv.convolution_param.group = 4, 1
        conv.convolution_param.kernel_size.append(3)
        conv.convolution_param.dilation.append(2)
        conv.blobs.add().CopyFrom(_blob(UP["BlobProto"], w))
        conv.blobs.add().CopyFrom(_blob(UP["BlobProto"], bias, double=True))
        ip = net.layer.add(name="fc", type="InnerProduct", bottom=["conv1"], top=["fc"])
        ip.inner_product_param.num_output = 5
        ip.blobs.add().CopyFrom(_blob(UP["BlobProto"], fc, legacy=True))
        pool = net.layer.add(name="pool", type="Pooling")
        pool.pooling_param.pool, pool.pooling_param.global_pooling = 1, True  # AVE
        relu = net.layer.add(name="relu", type="ReLU")
        relu.relu_param.negative_slope = 0.125
        soft = net.layer.add(name="prob", type="Softmax")
        soft.softmax_param.axis = 2
        inp = net.layer.add(name="data", type="Input")
        inp.input_param.shape.add().dim.extend([1, 3, 8, 8])
    else:
        conv = net.layers.add(name="conv1", type=4, bottom=["data"], top=["conv1"])  # CONVOLUTION
        conv.convolution_param.num_output = 4
        conv.convolution_param.kernel_size.append(3)
        conv.blobs.add().CopyFrom(_blob(UP["BlobProto"], w, legacy=True))
        conv.blobs.add().CopyFrom(_blob(UP["BlobProto"], bias, legacy=True))
        ip = net.layers.add(name="fc", type=14, bottom=["conv1"], top=["fc"])  # INNER_PRODUCT
        ip.inner_product_param.num_output = 5
        ip.blobs.add().CopyFrom(_blob(UP["BlobProto"], fc, double=True))
        pool = net.layers.add(name="pool", type=17)  # POOLING
        pool.pooling_param.pool = 1
        relu = net.layers.add(name="relu", type=18)  # RELU
        relu.relu_param.negative_slope = 0.125
        soft = net.layers.add(name="prob", type=20)  # SOFTMAX
        soft.softmax_param.axis = 2
    data = net.SerializeToString()
    for decode in (caffe_wire.decode_caffemodel, caffe_wire.decode_caffemodel_protobuf):
        layers, kind = decode(bytearray(data) if decode is caffe_wire.decode_caffemodel else data)
        assert kind == encoding
        by_name = {layer.name: (layer, arrays) for layer, arrays in layers}
        conv_l, conv_a = by_name["conv1"]
        assert conv_l.convolution_param.num_output == 4 and list(conv_l.convolution_param.kernel_size) == [3]
        expect_conv = [w, bias] if encoding == "layer" else [w, bias.reshape(1, 1, 1, 4)]
        assert [a.shape for a in conv_a] == [e.shape for e in expect_conv]
        for a, e in zip(conv_a, expect_conv):
            np.testing.assert_array_equal(a, e)
        ip_l, ip_a = by_name["fc"]
        assert ip_l.inner_product_param.num_output == 5
        np.testing.assert_array_equal(ip_a[0].reshape(fc.shape), fc)
        assert ip_a[0].shape == ((1, 1, 5, 6) if encoding == "layer" else (5, 6))
        assert by_name["pool"][0].pooling_param.pool == 1
        assert by_name["relu"][0].relu_param.negative_slope == 0.125
        assert by_name["prob"][0].softmax_param.axis == 2
        if encoding == "layer":
            assert list(conv_l.convolution_param.dilation) == [2] and by_name["pool"][0].pooling_param.global_pooling
            assert list(by_name["data"][0].input_param.shape[0].dim) == [1, 3, 8, 8]
        else:
            assert [schema.v1_type_name(l) for l, _ in layers] == ["Convolution", "InnerProduct", "Pooling",
                                                                     "ReLU", "Softmax"]


#: LayerParameter fields of the layer kinds the reader will grow to, and their parameters' fields:
#: in the table above, not yet in the schema (checked by the tests above once they are added).
FUTURE = ["LRNParameter", "ConcatParameter", "EltwiseParameter", "BatchNormParameter", "ScaleParameter",
          "BiasParameter"]


def test_future_layer_parameters_are_transcribed():
    for msg in FUTURE:
        assert any(m == msg for (m, _) in ROWS), msg
    for name in ("lrn_param", "concat_param", "eltwise_param", "batch_norm_param", "scale_param", "bias_param"):
        assert ("LayerParameter", name) in ROWS


# --------------------------------------------------------------------------- against BVLC's own file
def _parse_upstream_proto(text: str):
    """BVLC ``caffe.proto`` text → (fields {(message, name): (line, label, type, number, packed)},
    enums {"Message.Enum" or "Enum": {name: (line, number)}}). A small proto2 reader for this file's
    grammar: top-level messages holding fields and nested enums, top-level enums."""
    import re
    fields, enums, stack = {}, {}, []
    field_re = re.compile(r"^(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*(\[[^\]]*\])?\s*;")
    value_re = re.compile(r"^(\w+)\s*=\s*(-?\d+)\s*(\[[^\]]*\])?\s*;")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        opened = re.match(r"^(message|enum)\s+(\w+)\s*\{", line)
        if opened:
            stack.append((opened.group(1), opened.group(2)))
            continue
        if line.startswith("}"):
            stack.pop()
            continue
        if not stack:
            continue
        kind, name = stack[-1]
        if kind == "message" and (m := field_re.match(line)):
            label, ftype, fname, number, opts = m.groups()
            fields[(name, fname)] = (lineno, label, ftype, int(number), bool(opts and "packed = true" in opts))
        elif kind == "enum" and (m := value_re.match(line)):
            path = ".".join(n for _, n in stack)
            enums.setdefault(path, {})[m.group(1)] = (lineno, int(m.group(2)))
    return fields, enums


@pytest.fixture(scope="module")
def bvlc():
    from helpers import require_shared
    return _parse_upstream_proto(require_shared("caffe", "caffe.proto").read_text(encoding="utf-8"))


def _type_of(ftype: str) -> str:
    return ftype[5:].split(".")[-1] if ftype.startswith("enum:") else ftype


def test_the_transcription_is_bvlcs_file_line_for_line(bvlc):
    """Every row of ``UPSTREAM`` / ``UPSTREAM_ENUMS`` is in ``../shared/data/caffe/caffe.proto`` (BVLC's
    own text, commit 9b8915401) at the line it names, with its label, type, number and packing."""
    fields, enums = bvlc
    assert len(fields) > 400  # the whole file was read
    for line, msg, label, ftype, name, number, *extra in UPSTREAM:
        assert (msg, name) in fields, f"{msg}.{name} is not in BVLC caffe.proto"
        up_line, up_label, up_type, up_number, up_packed = fields[(msg, name)]
        assert (up_line, up_label, up_number, up_packed) == (line, label, number, "packed" in extra), (msg, name)
        assert up_type.split(".")[-1] == _type_of(ftype), (msg, name, up_type, ftype)
    for path, values in UPSTREAM_ENUMS.items():
        assert {n: (line, number) for line, n, number in values}.items() <= enums[path].items(), path


def test_every_schema_field_is_bvlcs(bvlc):
    """The reader's schema straight against BVLC's file: every message, field number, label, type and
    packing it declares is Caffe's."""
    fields, enums = bvlc
    for msg, label, ftype, name, number, extra in _schema_fields():
        assert (msg, name) in fields, f"{msg}.{name} is not in BVLC caffe.proto"
        _, up_label, up_type, up_number, up_packed = fields[(msg, name)]
        assert (up_label, up_number, up_packed) == (label, number, "packed" in extra), (msg, name)
        assert up_type.split(".")[-1] == _type_of(ftype), (msg, name, up_type, ftype)
    for path, values in schema.ENUMS.items():
        key = path if path in enums else next(p for p in enums if p.endswith("." + path) or p == path)
        assert {n: v for n, v in values} == {n: num for n, (_, num) in enums[key].items() if n in dict(values)}, path
