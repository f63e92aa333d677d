"""The procedural CLEVR-like scenes: labels of hand-built scenes, the drawing, the generator's determinism and
statistics, the cache, and `openjepa eval --task` on a run trained on them."""

import json

import numpy as np
import pytest
import torch

from openjepa import cli
from openjepa.api import pretrain
from openjepa.data.datasets import build_dataset, shapes
from openjepa.data.datasets.shapes import (
    COLOURS,
    DISTANCE_EDGES,
    MAX_OBJECTS,
    MIN_VISIBLE,
    Scenes,
    ShapesDataset,
    generate_shapes,
    render_scenes,
    sample_scenes,
)
from tests.helpers import TINY


def hand_built(*scenes: list[tuple]) -> Scenes:
    """Scenes from lists of objects ``(shape, colour, material, size, x, z)``."""
    n = len(scenes)
    fields = {
        k: torch.zeros(n, MAX_OBJECTS, dtype=torch.int64) for k in ("shape", "colour", "material", "size")
    }
    x, z = torch.zeros(n, MAX_OBJECTS), torch.zeros(n, MAX_OBJECTS)
    active = torch.zeros(n, MAX_OBJECTS, dtype=torch.bool)
    for i, objects in enumerate(scenes):
        for j, (shape, colour, material, size, xx, zz) in enumerate(objects):
            active[i, j] = True
            fields["shape"][i, j], fields["colour"][i, j] = shape, colour
            fields["material"][i, j], fields["size"][i, j] = material, size
            x[i, j], z[i, j] = xx, zz
    return Scenes(active, fields["shape"], fields["colour"], fields["material"], fields["size"], x, z)


RED, BLUE, GREEN = 1, 2, 3
SPHERE, CUBE, CYLINDER = 0, 1, 2


def test_labels_of_hand_built_scenes():
    row = [(SPHERE, RED, 0, 1, -2.0, 12.0), (CUBE, BLUE, 1, 0, 0.0, 9.0), (CYLINDER, GREEN, 0, 1, 2.0, 15.0)]
    scenes = hand_built(
        row,  # 3 objects, the closest at 9.0: bin [9, 9.75) = 4
        row + [(SPHERE, RED, 0, 0, 1.0, 6.1)] * 1,  # 4 objects, closest 6.1: bin 0
        [(SPHERE, RED, 0, 0, float(i) - 4.5, 10.4 + i * 0.5) for i in range(10)],  # 10 objects, 10.4: bin 5
        [(CUBE, RED, 0, 0, 0.0, 6.75), (CUBE, RED, 0, 0, 2.0, 9.0), (CUBE, RED, 0, 0, -2.0, 9.0)],  # edge
    )
    labels = scenes.labels()
    assert labels["count"].tolist() == [0, 1, 7, 0]
    assert labels["distance"].tolist() == [4, 0, 5, 1]  # a depth on an edge belongs to the bin above it
    assert DISTANCE_EDGES[1] == 6.75


def test_drawing_puts_each_object_where_the_camera_says_in_its_colour():
    # A red ball on the left, a blue cube on the right, both at depth 8; an empty floor otherwise.
    scenes = hand_built(
        [(SPHERE, RED, 0, 1, -1.5, 8.0), (CUBE, BLUE, 0, 1, 1.5, 8.0), (SPHERE, GREEN, 0, 0, 0, 14)]
    )
    image, visible = render_scenes(scenes, 96)
    camera = shapes._Camera(96, 96)
    u, v, r = camera.project(scenes.x[0, :2], scenes.z[0, :2], torch.tensor([0.8, 0.8]))
    ball = image[0, :, int(v[0] - r[0]), int(u[0])]  # the ball's centre
    cube = image[0, :, int(v[1] - 0.5 * r[1]), int(u[1])]  # low on the cube's front face
    assert ball.argmax() == 0 and ball[0] > 1.5 * ball[1:].max()  # red
    assert cube.argmax() == 2 and cube[2] > 1.5 * cube[:2].max()  # blue
    floor = image[0, :, 2, 48]  # far floor: grey
    assert (floor.max() - floor.min()) < 0.01 and 0.5 < floor.mean() < 0.7
    assert visible[0, :3].tolist() == [1.0, 1.0, 1.0] and visible[0, 3:].eq(0).all()
    # Nearer is lower and larger.
    near = shapes._Camera(96, 96).project(torch.tensor(0.0), torch.tensor(6.0), torch.tensor(0.8))
    far = shapes._Camera(96, 96).project(torch.tensor(0.0), torch.tensor(12.0), torch.tensor(0.8))
    assert near[1] > far[1] and near[2] == pytest.approx(2 * far[2])


def test_a_nearer_object_hides_what_is_behind_it():
    # A large red cube right in front of a small blue ball at the same x: the cube covers the ball.
    scenes = hand_built([(CUBE, RED, 0, 1, 0.0, 7.0), (SPHERE, BLUE, 0, 0, 0.0, 8.2)])
    image, visible = render_scenes(scenes, 64)
    assert visible[0, 0] == 1.0
    assert visible[0, 1] < MIN_VISIBLE  # such a scene is redrawn by the generator
    blue = image[0, 2] > 1.5 * image[0, :2].amax(0)
    assert blue.sum() < 6  # at most an edge of the ball shows


def test_shiny_objects_have_a_highlight():
    matte = hand_built([(SPHERE, RED, 0, 1, 0.0, 7.0)])
    shiny = hand_built([(SPHERE, RED, 1, 1, 0.0, 7.0)])
    a, _ = render_scenes(matte, 64)
    b, _ = render_scenes(shiny, 64)
    # The floor's lightest grey is 0.66: a matte red ball adds no pixel lighter in every channel; a shiny
    # one does.
    assert a.amin(1).max() < 0.67
    assert b.amin(1).max() > 0.85


def test_generator_is_deterministic_and_independent_of_the_number_asked():
    a, la = generate_shapes(40, 32, seed=3, split="train")
    c, lc = generate_shapes(700, 32, seed=3, split="train")  # two chunks of scenes
    assert torch.equal(c[:40], a) and all(torch.equal(lc[t][:40], la[t]) for t in la)
    other_split, _ = generate_shapes(40, 32, seed=3, split="test")
    other_seed, _ = generate_shapes(40, 32, seed=4, split="train")
    assert not torch.equal(other_split, a) and not torch.equal(other_seed, a)
    assert a.dtype == torch.uint8 and a.shape == (40, 3, 32, 32)


def test_labels_are_uniform_and_every_object_stays_visible():
    gen = torch.Generator().manual_seed(0)
    scenes = sample_scenes(2000, gen)
    labels = scenes.labels()
    counts = torch.bincount(labels["count"], minlength=8)
    distances = torch.bincount(labels["distance"], minlength=6)
    assert counts.min() > 180 and counts.max() < 320  # 250 expected per class
    assert distances.min() > 250 and distances.max() < 420  # 333 expected per class
    # No two objects intersect on the floor.
    radius = torch.tensor(shapes.RADII)[scenes.size]
    gap = torch.hypot(
        scenes.x[:, :, None] - scenes.x[:, None, :], scenes.z[:, :, None] - scenes.z[:, None, :]
    )
    pair = scenes.active[:, :, None] & scenes.active[:, None, :] & ~torch.eye(MAX_OBJECTS, dtype=torch.bool)
    assert (gap[pair] >= (radius[:, :, None] + radius[:, None, :])[pair]).all()
    # The generator's scenes: labels as drawn, every object at least MIN_VISIBLE visible.
    images, generated = generate_shapes(500, 48, seed=0, split="train")
    assert torch.bincount(generated["count"], minlength=8).min() > 30
    assert generated["distance"].max() == 5 and generated["count"].max() == 7


def test_redrawn_scenes_keep_their_labels(monkeypatch):
    """Scenes that hide an object are redrawn with the same count and closest depth."""
    original = shapes.render_scenes
    calls = []

    def render(scenes, size, width=None):
        image, visible = original(scenes, size, width)
        calls.append(len(visible))
        if len(calls) == 1:  # pretend the first two scenes hide an object
            visible[:2, 0] = 0.0
        return image, visible

    gen = torch.Generator().manual_seed(shapes._chunk_generator(0, "train", 0).initial_seed())
    drawn = sample_scenes(shapes.CHUNK, gen).labels()
    monkeypatch.setattr(shapes, "render_scenes", render)
    _, labels = generate_shapes(10, 32, seed=0, split="train")
    assert calls[0] == shapes.CHUNK and calls[1] >= 2  # the two, and any that really hid an object
    assert torch.equal(labels["count"], drawn["count"][:10])
    assert torch.equal(labels["distance"], drawn["distance"][:10])


def test_dataset_caches_its_images_and_reads_them_back(tmp_path, monkeypatch, capsys):
    first = ShapesDataset("test", size=32, num_samples=30, root=tmp_path, progress=False)
    files = list((tmp_path / "shapes").glob("*.npz"))
    assert [f.name for f in files] == ["shapes_v1_32px_test_30_seed0.npz"]
    assert first.num_classes == 8 and first.labels.dtype == torch.int64

    def fail(*args, **kwargs):
        raise AssertionError("generated again instead of reading the cache")

    monkeypatch.setattr(shapes, "generate_shapes", fail)
    second = ShapesDataset("val", size=32, num_samples=30, task="distance", root=tmp_path)
    assert torch.equal(second.images, first.images)
    assert torch.equal(second.labels, first.targets["distance"]) and second.num_classes == 6
    image, label = second[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 6


def test_a_broken_cache_file_is_generated_again(tmp_path, capsys):
    good = ShapesDataset("test", size=32, num_samples=20, root=tmp_path, progress=False)
    path = next((tmp_path / "shapes").glob("*.npz"))
    path.write_bytes(path.read_bytes()[:100])  # torn
    again = ShapesDataset("test", size=32, num_samples=20, root=tmp_path, progress=False)
    assert torch.equal(again.images, good.images)
    err = capsys.readouterr().err
    assert "is not a complete cache file; generating it again" in err
    with np.load(path) as f:  # rewritten whole
        assert f["images"].shape == (20, 3, 32, 32)


def test_an_unwritable_cache_folder_keeps_the_images_in_memory(tmp_path, capsys):
    blocker = tmp_path / "shapes"
    blocker.write_text("a file where the cache folder would go")
    ds = ShapesDataset("test", size=32, num_samples=5, root=tmp_path, progress=False)
    assert len(ds) == 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not cache the images" in err and "kept in memory only" in err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "dev"}, "split must be 'train' or 'test'"),
        ({"task": "colour"}, "task must be one of count, distance"),
        ({"size": 8}, "at least 16 pixels"),
        ({"num_samples": 0}, "at least 1"),
    ],
)
def test_bad_arguments_are_named(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        ShapesDataset(**{"root": tmp_path, "num_samples": 4, **kwargs})


def test_build_dataset_picks_the_task_and_refuses_tasks_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes, "default_sizes", lambda split: 12)
    ds = build_dataset("shapes", tmp_path, "train", image_size=32, task="distance")
    assert ds.num_classes == 6 and ds.images.shape == (12, 3, 32, 32)
    grey = build_dataset("shapes", tmp_path, "train", channels=1, image_size=32)
    assert grey.images.shape == (12, 1, 32, 32) and grey.num_classes == 8
    with pytest.raises(ValueError, match="dataset 'synthetic' has no task 'count': it has one set of labels"):
        build_dataset("synthetic", split="train", task="count")
    with pytest.raises(ValueError, match="its tasks are count, distance"):
        build_dataset("shapes", tmp_path, "train", task="colour")


def test_colours_are_clevr_s_eight():
    assert COLOURS.shape == (8, 3) and COLOURS.max() <= 1.0


def test_pretrain_on_shapes_then_eval_each_task(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shapes, "default_sizes", lambda split: 96 if split == "train" else 48)
    monkeypatch.setenv("OPENJEPA_DATA", str(tmp_path / "data"))
    out = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith("data.")]
    pretrain(
        None,
        [
            *overrides,
            "data.dataset=shapes",
            "data.image_size=16",
            "data.task=distance",
            "run.max_steps=2",
            f"run.out_dir={out}",
        ],
    )
    common = ["--no-progress", "--device", "cpu", "--precision", "fp32", "--baselines"]
    assert cli.main(["eval", "knn", str(out), *common, "--k", "5"]) == 0  # the run's own task: distance
    assert cli.main(["eval", "knn", str(out), *common, "--k", "5", "--task", "count"]) == 0
    printed = capsys.readouterr().out
    assert "kNN (cosine, weighted) on shapes (distance): 96 train / 48 test" in printed
    assert "on shapes (count): 96 train / 48 test" in printed and "(knn_count)" in printed
    sections = json.loads((out / "eval.json").read_text())
    assert set(sections) == {"knn_distance", "knn_count"}
    assert sections["knn_count"]["task"] == "count"
    assert [r["name"] for r in sections["knn_count"]["rows"]][:2] == ["raw pixels", "random init (same ViT)"]
    # Another dataset than the run's: its own single set of labels; a task there is refused in one line.
    assert cli.main(["eval", "knn", str(out), *common, "--data", "synthetic", "--task", "count"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'synthetic' has no task 'count'" in err and "Traceback" not in err
