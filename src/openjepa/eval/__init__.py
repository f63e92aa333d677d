"""Evaluation of pretrained encoders: features, kNN, linear probes, fine-tuning, low-shot, embeddings.

One module per concern: ``data`` (labelled images and preprocessing), ``features`` (frozen, pooled
features), ``knn``, ``linear``, ``finetune``, ``lowshot``, ``results`` (``eval.json`` and tables), ``embed``
(features to a file) and ``run`` (a checkpoint evaluated by a protocol, as ``openjepa eval`` does).
"""

from openjepa.eval.data import EvalData, encoder_input, load_eval_data
from openjepa.eval.embed import embed_to_file, save_features
from openjepa.eval.features import encoder_features, extract_features, pixel_features, pool_tokens
from openjepa.eval.finetune import Classifier, FinetuneResult, finetune, layer_decay_groups
from openjepa.eval.knn import choose_whitening, knn_accuracy_pixels, knn_classify, knn_predict, whitening
from openjepa.eval.linear import ProbeResult, linear_probe, split_train_val
from openjepa.eval.lowshot import LOWSHOT_FRACTIONS, lowshot_indices

__all__ = [
    "LOWSHOT_FRACTIONS",
    "Classifier",
    "EvalData",
    "FinetuneResult",
    "ProbeResult",
    "choose_whitening",
    "embed_to_file",
    "encoder_features",
    "encoder_input",
    "extract_features",
    "finetune",
    "knn_accuracy_pixels",
    "knn_classify",
    "knn_predict",
    "layer_decay_groups",
    "linear_probe",
    "load_eval_data",
    "lowshot_indices",
    "pixel_features",
    "pool_tokens",
    "save_features",
    "split_train_val",
    "whitening",
]
