"""Evaluation of pretrained encoders: features, kNN, linear probes, fine-tuning, low-shot."""

from openjepa.eval.embed import embed_to_file, save_features
from openjepa.eval.features import extract_features, pool_tokens
from openjepa.eval.finetune import Classifier, FinetuneResult, finetune, layer_decay_groups
from openjepa.eval.knn import knn_accuracy_pixels, knn_classify, knn_predict
from openjepa.eval.linear import ProbeResult, linear_probe, split_train_val
from openjepa.eval.protocols import encoder_features, lowshot_indices

__all__ = [
    "Classifier",
    "FinetuneResult",
    "ProbeResult",
    "embed_to_file",
    "encoder_features",
    "extract_features",
    "finetune",
    "knn_accuracy_pixels",
    "knn_classify",
    "knn_predict",
    "layer_decay_groups",
    "linear_probe",
    "lowshot_indices",
    "pool_tokens",
    "save_features",
    "split_train_val",
]
