"""Tests for openjepa.rng: the global RNG state of a checkpoint, and per-step generators."""

import random

import pytest
import torch

from openjepa.rng import Stream, rng_state, set_rng_state, step_generator
from openjepa.utils.io import load_torch_file, save_torch_file


def draws():
    return torch.rand(5), torch.randint(0, 1000, (5,)), random.random()


def test_rng_round_trip_through_checkpoint(tmp_path):
    state = rng_state()
    first = draws()
    path = save_torch_file({"rng": state}, tmp_path / "rng.pt")  # must survive weights_only loading
    draws()  # advance further
    set_rng_state(load_torch_file(path)["rng"])
    second = draws()
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[2] == second[2]


def test_rng_state_holds_torch_and_python():
    state = rng_state()
    assert {"torch", "python"} <= set(state) <= {"torch", "python", "cuda"}
    assert state["torch"].dtype == torch.uint8
    set_rng_state({**state, "python": [state["python"][0], list(state["python"][1]), None]})  # lists: JSON


def test_set_rng_state_validates():
    with pytest.raises(ValueError, match="unknown"):
        set_rng_state({"torch": torch.get_rng_state(), "numpy": 1})
    with pytest.raises(ValueError, match="'torch'"):
        set_rng_state({})
    with pytest.raises(ValueError, match="uint8"):
        set_rng_state({"torch": torch.zeros(3)})
    with pytest.raises(ValueError, match="'python' must be a 3-tuple"):
        set_rng_state({"torch": torch.get_rng_state(), "python": (1, 2)})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_cuda_states_without_cuda():
    state = {"torch": torch.get_rng_state(), "cuda": [torch.get_rng_state()]}
    with pytest.raises(RuntimeError, match="1 CUDA generator"):
        set_rng_state(state)
    with pytest.warns(UserWarning, match="CUDA"):
        set_rng_state(state, strict=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_round_trip(tmp_path):
    torch.cuda.init()
    state = rng_state()
    assert len(state["cuda"]) == torch.cuda.device_count()
    first = torch.rand(5, device="cuda"), torch.rand(5)
    path = save_torch_file({"rng": state}, tmp_path / "rng.pt")
    torch.rand(5, device="cuda")
    set_rng_state(load_torch_file(path, map_location="cuda")["rng"])
    second = torch.rand(5, device="cuda"), torch.rand(5)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


# ---------------------------------------------------------------------------------------- step generators


def numbers(seed: int, step: int, rank: int = 0) -> torch.Tensor:
    return torch.rand(8, generator=step_generator(seed, step, rank))


def test_step_generator_is_a_pure_function_of_seed_step_rank():
    assert torch.equal(numbers(0, 12), numbers(0, 12))
    assert torch.equal(numbers(0, 12, rank=1), numbers(0, 12, rank=1))
    # a fresh generator each call: the global RNG neither feeds nor is advanced by it
    before = torch.get_rng_state()
    torch.manual_seed(123)
    a = numbers(5, 3)
    torch.manual_seed(456)
    assert torch.equal(a, numbers(5, 3))
    torch.set_rng_state(before)
    state = torch.get_rng_state()
    numbers(5, 4)
    assert torch.equal(torch.get_rng_state(), state)
    assert step_generator(0, 0).device.type == "cpu"


def test_step_generator_streams_differ():
    base = numbers(0, 12)
    for other in (numbers(0, 13), numbers(1, 12), numbers(0, 12, rank=1), numbers(0 ^ Stream.CROPS, 12)):
        assert not torch.equal(base, other)
    # every named stream of one seed and step draws its own numbers
    draws_by_stream = [numbers(7 ^ s, 2) for s in Stream]
    for i in range(len(draws_by_stream)):
        for j in range(i):
            assert not torch.equal(draws_by_stream[i], draws_by_stream[j])
    assert len({int(s) for s in Stream}) == len(Stream)


def test_step_generator_takes_large_seeds_and_steps():
    big = numbers(2**63 + 5, 10**12)
    assert big.shape == (8,) and torch.equal(big, numbers(2**63 + 5, 10**12))
