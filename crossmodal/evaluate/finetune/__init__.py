"""``crossmodal finetune``: a converted network adapted to clip art and sketches by training, from a new
head to the whole network (resumable, data-parallel through torchrun), with modality towers and a
hyper-parameter search on top.

Modules: :mod:`settings` (every option, checked; what a resume may change), :mod:`data` (data sets,
seeded augmentation, epoch orders and shards), :mod:`net` (the trainable module built from the IR:
frozen prefix without autograd, the new head warm-started), :mod:`towers` (per-modality lower layers,
one shared top), :mod:`loop` (one epoch of training and the exact validation), :mod:`checkpoint`
(atomic ``last.pt``, exact resume), :mod:`ddp` (torchrun, gloo/NCCL), :mod:`export` (the trained
weights as model folders), :mod:`reports` (history, curves, JSON, Markdown), :mod:`search` (Optuna),
:mod:`job` (the driver).
"""
