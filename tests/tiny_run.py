"""Config overrides of a tiny but complete run, shared by the tests that pretrain for a few steps.

Synthetic 16 px images, a 2-block ViT of width 32, a 4x4 patch grid, batch 16, CPU and fp32.
"""

TINY = [
    "data.dataset=synthetic",
    "data.image_size=16",
    "model.patch_size=4",
    "model.depth=2",
    "model.embed_dim=32",
    "model.num_heads=2",
    "model.pred_depth=1",
    "model.pred_dim=16",
    "masks.min_keep=2",
    "optim.batch_size=16",
    "optim.epochs=1",
    "optim.warmup_epochs=0.01",
    "run.device=cpu",
    "run.precision=fp32",
    "run.progress=false",
    "run.log_every=1",
]
