"""Shared by the viz tests: the size of a visualize PNG grid."""

from openjepa.viz.maps import LINE, PAD


def grid_size(n_checkpoints: int, n_images: int, cell: int) -> tuple[int, int]:
    """(width, height) of the grid of an I-JEPA run: a row per image; the image, then per checkpoint the
    target and context attention and the PCA of the target; two header lines."""
    return PAD + (1 + 3 * n_checkpoints) * (cell + PAD), PAD + 2 * LINE + n_images * (cell + PAD)
