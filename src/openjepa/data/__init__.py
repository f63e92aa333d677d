"""Training data: datasets by name, the per-step stream, the pretraining crops and batched transforms.

dataset = build_dataset("fashion_mnist", split="train")
stream = StepBatches(dataset, global_batch=128, seed=0)        # the images of every step
augment = PretrainAugment(28, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
"""

from openjepa.data.augment import PretrainAugment
from openjepa.data.datasets import (
    DATASET_NAMES,
    CifarDataset,
    IdxDataset,
    ImageFolder,
    SyntheticDataset,
    TensorImageDataset,
    build_dataset,
    dataset_channels,
    fashion_mnist,
    in_memory_tensors,
    mnist,
)
from openjepa.data.photometric import PhotometricAugment, ViewPairAugment
from openjepa.data.stream import StepBatches
from openjepa.data.transforms import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    normalization_stats,
    normalize,
)

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CifarDataset",
    "IdxDataset",
    "ImageFolder",
    "PhotometricAugment",
    "PretrainAugment",
    "StepBatches",
    "SyntheticDataset",
    "TensorImageDataset",
    "ViewPairAugment",
    "build_dataset",
    "dataset_channels",
    "fashion_mnist",
    "in_memory_tensors",
    "mnist",
    "normalization_stats",
    "normalize",
]
