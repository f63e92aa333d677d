"""Evaluation of frozen encoders: feature extraction and kNN classification."""

from openjepa.eval.features import extract_features, pool_tokens
from openjepa.eval.knn import knn_accuracy_pixels, knn_classify, knn_predict

__all__ = [
    "extract_features",
    "knn_accuracy_pixels",
    "knn_classify",
    "knn_predict",
    "pool_tokens",
]
