"""Running a converted model: one engine interface for verification, evaluation and explanation.

:func:`open_engine` (:mod:`crossmodal.runtime.engine`) opens ``onnx`` / ``keras`` / ``torch`` /
``ir`` / ``tf2onnx`` on a model folder → :class:`~crossmodal.runtime.engine.Engine` with
``run(batch) -> {name: NCHW array}``. Devices, reduced precision and ONNX Runtime sessions live here
too; ONNX Runtime sessions and Keras model loads that run a model are made in this package alone.
"""
