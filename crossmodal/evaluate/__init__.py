"""Evaluation jobs on converted models: the feature pass and its cache, then one sub-package per job
(baseline, retrieval, probe).

The retrieval metric core is importable from here::

    from crossmodal.evaluate import mean_average_precision
"""
from crossmodal.evaluate.retrieval.chance import (
    chance_map, chance_precision_at_k, chance_recall_at_k, expected_random_ap,
)
from crossmodal.evaluate.retrieval.metrics import (
    RetrievalResult, RetrievalScores, mean_average_precision, precision_at_k, recall_at_k, retrieval_scores,
)

__all__ = ["RetrievalResult", "RetrievalScores", "mean_average_precision", "precision_at_k", "recall_at_k",
           "retrieval_scores", "chance_map", "chance_precision_at_k", "chance_recall_at_k", "expected_random_ap"]
