"""Image folders met in the wild: crops of the original image, JPEG draft decoding, EXIF orientation, every
Pillow mode, link loops, FIFOs, huge headers, folders of corrupt files, and the count of skipped images."""

from __future__ import annotations

import os
import signal
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa import cli
from openjepa.config import load_config
from openjepa.data.datasets import folder as folder_module
from openjepa.data.datasets.folder import CropSpec, ImageFolder
from openjepa.data.stream import StepBatches
from openjepa.data.transforms import sample_crop_boxes
from openjepa.rng import Stream, step_generator
from openjepa.train.trainer import build_augment, build_train_data

RED, BLUE, GRAY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _red_corner(width: int = 96, height: int = 32) -> Image.Image:
    """Gray, with a red square in the top-left corner: the only red of the image, far from its centre."""
    image = Image.new("RGB", (width, height), GRAY)
    image.paste(RED, (0, 0, 12, 12))
    return image


def _is_red(crops: torch.Tensor) -> torch.Tensor:
    """Per image of (B, 3, H, W) floats in [0, 1]: does any pixel look red?"""
    red = (crops[:, 0] > 0.8) & (crops[:, 1] < 0.2) & (crops[:, 2] < 0.2)  # (B, H, W)
    return red.flatten(1).any(dim=1)


def _left_red_right_blue(width: int, height: int) -> Image.Image:
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def fail(signum: int, frame: object) -> None:
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---- the crop is drawn on the original image ----------------------------------------------------------


def test_training_crops_of_a_folder_reach_the_corners_of_the_original_image(tmp_path: Path) -> None:
    for i in range(4):
        _save(_red_corner(), tmp_path / "data" / "k" / f"{i}.png")
    cfg = load_config(
        None,
        [
            "data.dataset=folder",
            f"data.root={tmp_path / 'data'}",
            "data.image_size=16",
            "data.flip=true",
            "run.seed=3",
            "method.masks.min_keep=2",  # a 4x4 patch grid
        ],
    )
    dataset = build_train_data(cfg)
    augment = build_augment(cfg, channels=3)
    stream = StepBatches(dataset, global_batch=4, seed=3)
    rows = stream.rows()
    crops = torch.cat([augment.crops(images, step, rows, 4) for step, images in stream.iterate(0, 8)])
    assert crops.shape == (32, 3, 16, 16)
    red = _is_red(crops)
    # The old pipeline centre-cropped a 8/7 resize first, so the red corner was never seen.
    assert 0 < int(red.sum()) < 32


def test_crop_boxes_follow_the_batched_sampler_drawn_per_step_and_row(tmp_path: Path) -> None:
    """The box of (step, row) is sample_crop_boxes' distribution on the image's own size."""
    gradient = np.zeros((30, 50, 3), dtype=np.uint8)
    gradient[..., 0] = np.arange(50, dtype=np.uint8)[None, :] * 5  # red encodes x
    gradient[..., 1] = np.arange(30, dtype=np.uint8)[:, None] * 8  # green encodes y
    _save(Image.fromarray(gradient), tmp_path / "g.png")
    spec = CropSpec(size=8, scale=(0.3, 1.0), seed=7)
    ds = ImageFolder(tmp_path, crop=spec)
    for step, row in [(0, 0), (0, 1), (5, 3)]:
        x0, y0, w, h = spec.box(step, row, 30, 50)
        g = step_generator(7 ^ Stream.ITEM_CROPS, step, row)
        assert (x0, y0, w, h) == tuple(sample_crop_boxes(1, 30, 50, (0.3, 1.0), generator=g)[0].tolist())
        image, label, replaced = ds[(0, step, row)]
        assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and label == -1 and not replaced
        # the output's colours span the box: red ≈ 5·x, green ≈ 8·y inside it
        assert abs(image[0, :, 0].float().mean() / 5 - (x0 + w / 16)) < 1.5
        assert abs(image[1, 0, :].float().mean() / 8 - (y0 + h / 16)) < 1.5
        assert torch.equal(image, ds[(0, step, row)][0])  # a pure function of the key
    assert not torch.equal(ds[(0, 0, 0)][0], ds[(0, 0, 1)][0])
    whole = ImageFolder(tmp_path, crop=CropSpec(size=8, scale=(1.0, 1.0)))[(0, 4, 2)][0]
    expected = np.asarray(Image.fromarray(gradient).resize((8, 8), Image.Resampling.BILINEAR))
    assert torch.equal(whole, torch.from_numpy(expected.copy()).permute(2, 0, 1))


def test_folder_crops_are_the_same_for_one_and_two_processes_and_on_resume(tmp_path: Path) -> None:
    for i in range(8):
        image = _red_corner()
        image.paste((i * 30, 255 - i * 30, 0), (40, 10, 60, 30))  # every file its own colour
        _save(image, tmp_path / ("a" if i < 4 else "b") / f"{i}.png")

    def stream(rank: int, world: int, workers: int) -> StepBatches:
        ds = ImageFolder(tmp_path, crop=CropSpec(size=12, seed=5))
        return StepBatches(ds, global_batch=4, seed=5, rank=rank, world_size=world, num_workers=workers)

    one = list(stream(0, 1, 0).iterate(0, 4))
    first = list(stream(0, 2, 0).iterate(0, 4))
    second = list(stream(1, 2, 2).iterate(0, 4))
    for (step, whole), (_, r0), (_, r1) in zip(one, first, second, strict=True):
        assert whole.shape == (4, 3, 12, 12) and whole.dtype == torch.uint8
        assert torch.equal(whole[0::2], r0) and torch.equal(whole[1::2], r1), step
    resumed = list(stream(0, 1, 0).iterate(2, 4))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, one[2:], strict=True))
    assert not torch.equal(one[0][1], one[1][1])


# ---- decoding --------------------------------------------------------------------------------------


def test_a_large_jpeg_is_decoded_at_the_smallest_scale_covering_the_crop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = np.zeros((768, 1024, 3), dtype=np.uint8)
    x[..., 0] = np.linspace(0, 255, 1024, dtype=np.float64).astype(np.uint8)[None, :]
    x[..., 1] = np.linspace(0, 255, 768, dtype=np.float64).astype(np.uint8)[:, None]
    _save(Image.fromarray(x), tmp_path / "big.jpg", quality=95)
    decoded: list[tuple[int, int]] = []
    to_8bit = folder_module._to_8bit

    def spy(img: Image.Image, channels: int) -> Image.Image:
        decoded.append(img.size)
        return to_8bit(img, channels)

    monkeypatch.setattr(folder_module, "_to_8bit", spy)
    whole = ImageFolder(tmp_path, crop=CropSpec(size=32, scale=(1.0, 1.0)))[(0, 0, 0)][0]
    assert decoded == [(128, 96)]  # 1/8: the whole 1024×768 image still has 96 ≥ 32 pixels a side
    reference = np.asarray(Image.fromarray(x).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.abs(whole.permute(1, 2, 0).numpy().astype(int) - reference.astype(int)).max() <= 8

    spec = CropSpec(size=64, scale=(0.3, 1.0), seed=1)
    ds = ImageFolder(tmp_path, crop=spec)
    for step in range(6):
        decoded.clear()
        crop = ds[(0, step, 0)][0]
        x0, y0, w, h = spec.box(step, 0, 768, 1024)
        reduction = 1024 // decoded[0][0]
        assert reduction in (1, 2, 4, 8) and decoded[0] == (1024 // reduction, 768 // reduction)
        assert min(w, h) / reduction >= 64 and (reduction == 8 or min(w, h) / (2 * reduction) < 64)
        box = (x0, y0, x0 + w, y0 + h)
        reference = np.asarray(Image.fromarray(x).resize((64, 64), Image.Resampling.BILINEAR, box=box))
        assert np.abs(crop.permute(1, 2, 0).numpy().astype(int) - reference.astype(int)).mean() < 3


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str) -> None:
    upright = _left_red_right_blue(400, 200)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the pixels are stored turned the other way
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    _save(stored, tmp_path / f"turned{suffix}", exif=exif.tobytes())
    image = ImageFolder(tmp_path)[0][0]
    assert image.shape == (3, 200, 400)
    assert image[0, :, :150].mean() > 0.9 and image[2, :, 250:].mean() > 0.9
    crop = ImageFolder(tmp_path, crop=CropSpec(size=16, scale=(1.0, 1.0)))[(0, 0, 0)][0].float() / 255
    assert crop[0, :, :6].mean() > 0.9 and crop[2, :, 10:].mean() > 0.9


def _mode_image(mode: str) -> tuple[Image.Image, str, dict]:
    if mode == "1":
        return Image.new("1", (4, 3), 1), ".png", {}
    if mode == "P":
        image = Image.new("P", (4, 3), 1)
        image.putpalette([0, 0, 0, 255, 0, 0])
        return image, ".png", {}
    if mode == "P-transparent":
        image = Image.new("P", (4, 3), 1)
        image.putpalette([0, 0, 0, 255, 0, 0])
        return image, ".png", {"transparency": 1}
    if mode == "RGBA-clear":
        return Image.new("RGBA", (4, 3), (255, 0, 0, 0)), ".png", {}
    if mode == "RGBA":
        return Image.new("RGBA", (4, 3), (255, 0, 0, 255)), ".png", {}
    if mode == "LA":
        return Image.new("LA", (4, 3), (100, 255)), ".png", {}
    if mode == "CMYK":
        return Image.new("CMYK", (4, 3), (0, 255, 255, 0)), ".tif", {}
    if mode == "F":
        return Image.fromarray(np.full((3, 4), 0.5, dtype=np.float32)), ".tif", {}
    if mode == "I;16":
        return Image.fromarray(np.full((3, 4), 128 * 257, dtype=np.uint16)), ".png", {}
    assert mode == "I"
    return Image.fromarray(np.full((3, 4), 128 * 257, dtype=np.int32)), ".tif", {}


@pytest.mark.parametrize(
    "mode, rgb",
    [
        ("1", (255, 255, 255)),
        ("P", RED),
        ("P-transparent", (255, 255, 255)),  # composited over white
        ("RGBA-clear", (255, 255, 255)),
        ("RGBA", RED),
        ("LA", (100, 100, 100)),
        ("CMYK", RED),
        ("F", (128, 128, 128)),  # 0.5 of [0, 1]
        ("I;16", (128, 128, 128)),  # 128·257 of [0, 65535]
        ("I", (128, 128, 128)),
    ],
)
def test_every_pillow_mode_becomes_8_bit_rgb(tmp_path: Path, mode: str, rgb: tuple[int, int, int]) -> None:
    image, suffix, options = _mode_image(mode)
    path = _save(image, tmp_path / f"x{suffix}", **options)
    with Image.open(path) as reopened:
        assert reopened.mode == mode.split("-")[0]
    got = ImageFolder(tmp_path)[0][0]
    assert got.shape == (3, 3, 4)
    assert torch.equal(got, torch.tensor(rgb).view(3, 1, 1).expand(3, 3, 4).float() / 255)
    crop = ImageFolder(tmp_path, crop=CropSpec(size=2, scale=(1.0, 1.0)))[(0, 0, 0)][0]
    assert torch.equal(crop, torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, 2, 2))


def test_a_16_bit_png_keeps_its_gray_levels(tmp_path: Path) -> None:
    values = np.array([[0, 257, 128 * 257, 65535]], dtype=np.uint16)
    _save(Image.fromarray(values), tmp_path / "deep.png")
    gray = ImageFolder(tmp_path, channels=1)[0][0]
    assert torch.equal(gray, torch.tensor([[[0.0, 1.0, 128.0, 255.0]]]) / 255)


# ---- what the listing and the reader refuse ----------------------------------------------------------


def test_a_link_loop_lists_every_file_once_with_its_own_label(tmp_path: Path) -> None:
    _save(Image.new("RGB", (4, 4), RED), tmp_path / "cat" / "a.png")
    _save(Image.new("RGB", (4, 4), BLUE), tmp_path / "dog" / "sub" / "b.png")
    os.symlink(tmp_path, tmp_path / "cat" / "to_root")  # loops back through cat and into dog
    os.symlink(tmp_path / "dog", tmp_path / "dog" / "sub" / "to_dog")
    ds = ImageFolder(tmp_path)
    assert [p.name for p, _ in ds.samples] == ["a.png", "b.png"] and ds.labels.tolist() == [0, 1]


def test_a_fifo_named_like_an_image_is_skipped_without_blocking(tmp_path: Path) -> None:
    _save(Image.new("RGB", (4, 4), RED), tmp_path / "k" / "b.png")
    os.mkfifo(tmp_path / "k" / "a.jpg")
    ds = ImageFolder(tmp_path)
    assert len(ds) == 2
    with _time_limit(10), pytest.warns(UserWarning, match="a.jpg: OSError: not a regular file"):
        image, _ = ds[0]
    assert image[0].mean() == 1.0 and ds.num_corrupt == 1


def test_an_image_above_the_pixel_limit_is_skipped_before_decoding(tmp_path: Path) -> None:
    _save(Image.new("1", (10_000, 9_000)), tmp_path / "huge.png")  # 90 Mpx in a few kB
    _save(Image.new("RGB", (4, 4), RED), tmp_path / "small.png")
    assert (tmp_path / "huge.png").stat().st_size < 100_000
    ds = ImageFolder(tmp_path)
    with pytest.warns(UserWarning, match=r"huge.png: ValueError: image of 10000×9000 pixels is larger"):
        image, _ = ds[0]
    assert image.shape == (3, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ds[(0, 0, 0)][2]  # by step key too: replaced by the next image


def test_the_pixel_limit_can_be_set_and_jpegs_are_reduced_to_fit_it(tmp_path: Path) -> None:
    _save(Image.new("RGB", (200, 120), RED), tmp_path / "a.png")
    _save(Image.new("RGB", (200, 120), BLUE), tmp_path / "b.jpg")
    ds = ImageFolder(tmp_path, max_pixels=2_000)
    with pytest.warns(UserWarning, match="a.png: ValueError: image of 200×120 pixels"):
        image, _ = ds[0]
    assert image.shape == (3, 30, 50)  # b.jpg decoded at 1/4: 50×30 = 1,500 pixels
    assert image[2].mean() > 0.9
    crop, _, replaced = ImageFolder(tmp_path, crop=CropSpec(size=8), max_pixels=2_000)[(1, 0, 0)]
    assert crop.shape == (3, 8, 8) and not replaced


def test_a_folder_of_only_corrupt_files_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    for name in ("a.jpg", "b.png"):
        _save(Image.new("RGB", (2, 2)), bad / "k" / name)
        (bad / "k" / name).write_bytes(b"not an image")
    message = rf"no readable image in {bad}: all 2 files failed to decode"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=message):
            ImageFolder(bad)[1]
        stream = StepBatches(ImageFolder(bad, crop=CropSpec(4)), global_batch=2, seed=0, num_workers=2)
        with pytest.raises(ValueError, match=message) as info:
            list(stream.iterate(0, 1))
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


def test_the_command_line_reports_a_folder_of_corrupt_files_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a.jpg", "b.png"):
        (tmp_path / "data" / "k").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "k" / name).write_bytes(b"not an image")
    config = tmp_path / "empty.yaml"
    config.write_text("# all defaults\n")
    args = ["data.dataset=folder", f"data.root={tmp_path / 'data'}", f"run.out_dir={tmp_path / 'run'}"]
    code = cli.main(["pretrain", str(config), *args, "optim.batch_size=2", "run.device=cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("openjepa: error")]
    assert code != 0 and "Traceback" not in err and len(errors) == 1, err
    assert "all 2 files failed to decode" in errors[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_skipped_images_are_counted_over_workers(tmp_path: Path, workers: int) -> None:
    for i in range(6):
        path = _save(Image.new("RGB", (5, 5), (40 * i, 0, 0)), tmp_path / "k" / f"{i}.png")
        if i in (1, 4):
            path.write_bytes(b"corrupt")
    ds = ImageFolder(tmp_path, crop=CropSpec(4, seed=2))
    stream = StepBatches(ds, global_batch=6, seed=2, num_workers=workers)  # every image at every step
    assert stream.skipped_images == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(stream.iterate(0, 3))
        assert len(batches) == 3 and stream.skipped_images == 6
        list(stream.iterate(3, 4))
    assert stream.skipped_images == 8  # cumulative over iterations
