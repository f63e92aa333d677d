"""Pictures and reports: attention and PCA maps of encoders, PNG grids, and an HTML report of a run."""

from openjepa.viz.maps import (
    attention_maps,
    heatmap_overlay,
    load_dataset_images,
    load_image_files,
    pca_maps,
    visualize,
)
from openjepa.viz.report import write_report

__all__ = [
    "attention_maps",
    "heatmap_overlay",
    "load_dataset_images",
    "load_image_files",
    "pca_maps",
    "visualize",
    "write_report",
]
