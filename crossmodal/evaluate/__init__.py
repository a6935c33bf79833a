"""Evaluation: data sets, image decoding, label muting, backends, feature cache, metrics, reports.

The retrieval metric core is importable from here::

    from crossmodal.evaluate import mean_average_precision
"""
from crossmodal.evaluate.retrieval.metrics import (  # noqa: F401
    RetrievalResult, RetrievalScores, chance_map, chance_precision_at_k, chance_recall_at_k,
    expected_random_ap, mean_average_precision, precision_at_k, recall_at_k, retrieval_scores,
)
