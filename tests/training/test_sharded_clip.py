"""Per-player clipping over gradient shards (FSDP): 2 CPU processes (gloo) each holding half of every
gradient clip exactly as one process clipping the whole gradient; a rank holding no gradient of a player
still joins the all-reduce (else the others wait forever); the reduced tensor lives where the backend
reduces. The function alone, on hand-made shards; tests/training/test_fsdp.py checks it inside a real
FSDP run of the Flux job."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from advtune.training.optimization import clip_player_gradients
from advtune.training.sharded_clip import clip_sharded_grad_norm_, collective_device

FULL = [torch.arange(12.0).reshape(4, 3) - 5, torch.linspace(-3, 4, 6)]


def _shard(tensor: torch.Tensor, rank: int) -> torch.Tensor:
    flat = tensor.flatten()
    half = (flat.numel() + 1) // 2
    return flat[:half].clone() if rank == 0 else flat[half:].clone()


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    params = [torch.nn.Parameter(torch.zeros_like(_shard(g, rank))) for g in FULL]
    for param, grad in zip(params, FULL):
        param.grad = _shard(grad, rank)
    empty = torch.nn.Parameter(torch.zeros(0))  # a rank may hold nothing of a parameter
    empty.grad = torch.zeros(0)
    norm = clip_sharded_grad_norm_(params + [empty], max_norm=2.0)
    queue.put((rank, float(norm), [p.grad.tolist() for p in params]))  # plain lists: outlive the process
    dist.destroy_process_group()


def _empty_rank_worker(rank: int, port: int, queue) -> None:
    """Rank 1 holds no gradient: an empty list to the function, parameters without .grad to the hook."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=30))
    params = []
    if rank == 0:  # rank 0 holds every gradient whole
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in FULL]
        for param, grad in zip(params, FULL):
            param.grad = grad.clone()
    norm = clip_sharded_grad_norm_(params, max_norm=2.0)
    player = torch.nn.Parameter(torch.zeros(3))
    if rank == 0:
        player.grad = torch.tensor([3.0, 4.0, 0.0])
    hook_norm = clip_player_gradients(torch.optim.SGD([player], lr=0.1), 1.0, sharded=True)
    queue.put((rank, float(norm), float(hook_norm), None if player.grad is None else player.grad.tolist()))
    dist.destroy_process_group()


def _run_two_ranks(target) -> dict:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=target, args=(rank, port, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    try:
        results = {item[0]: item[1:] for item in (queue.get(timeout=120) for _ in processes)}
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    assert [process.exitcode for process in processes] == [0, 0]
    return results


@pytest.mark.ddp
@pytest.mark.slow
def test_a_rank_without_gradients_joins_the_all_reduce():
    """Before the fix the module skipped the clip on a rank whose player had no gradient: rank 0 then
    waited in the all-reduce until gloo's timeout."""
    results = _run_two_ranks(_empty_rank_worker)
    reference = [torch.nn.Parameter(torch.zeros_like(g)) for g in FULL]
    for param, grad in zip(reference, FULL):
        param.grad = grad.clone()
    expected = float(torch.nn.utils.clip_grad_norm_(reference, max_norm=2.0))
    assert results[0][0] == results[1][0] == pytest.approx(expected, rel=1e-6)
    assert results[0][1] == results[1][1] == pytest.approx(5.0)  # the hook's all-reduced norm, on both ranks
    assert results[0][2] == pytest.approx([0.6, 0.8, 0.0]) and results[1][2] is None


@pytest.mark.ddp
@pytest.mark.slow
def test_two_ranks_with_gradient_shards_clip_like_one_process_with_the_whole_gradient():
    results = _run_two_ranks(_worker)

    reference = [torch.nn.Parameter(torch.zeros_like(g)) for g in FULL]
    for param, grad in zip(reference, FULL):
        param.grad = grad.clone()
    expected_norm = torch.nn.utils.clip_grad_norm_(reference, max_norm=2.0)
    assert results[0][0] == results[1][0] == pytest.approx(float(expected_norm), rel=1e-6)  # the global norm, both ranks
    for index, param in enumerate(reference):
        joined = torch.tensor(results[0][1][index] + results[1][1][index])
        torch.testing.assert_close(joined, param.grad.flatten())


def test_without_a_process_group_it_is_clip_grad_norm():
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in FULL]
    reference = [torch.nn.Parameter(torch.zeros_like(g)) for g in FULL]
    for a, b, grad in zip(params, reference, FULL):
        a.grad, b.grad = grad.clone(), grad.clone()
    norm = clip_sharded_grad_norm_(params, 1.0)
    torch.testing.assert_close(norm, torch.nn.utils.clip_grad_norm_(reference, 1.0))
    for a, b in zip(params, reference):
        torch.testing.assert_close(a.grad, b.grad)
    assert float(clip_sharded_grad_norm_([torch.nn.Parameter(torch.ones(2))], 1.0)) == 0.0  # no gradients: norm 0


def test_the_reduced_tensor_lives_where_the_backend_reduces():
    """NCCL reduces accelerator tensors only: a rank with no gradient (fallback: the CPU) must still use
    the accelerator; gloo reduces CPU tensors; a per-device backend map takes the gradients' device."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 1)
    assert collective_device("nccl", cpu, accelerator=gpu) == gpu
    assert collective_device("gloo", gpu, accelerator=gpu) == cpu
    assert collective_device("cpu:gloo,cuda:nccl", cpu, accelerator=gpu) == cpu
    assert collective_device("nccl", cpu, accelerator=None) == cpu  # no accelerator: nothing better to pick
    assert collective_device("gloo", cpu) == cpu


def test_the_hook_helper_clips_one_player_and_skips_without_a_norm():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    params[0].grad = torch.tensor([3.0, 4.0])  # the second has no gradient
    optimizer = torch.optim.SGD(params, lr=0.1)
    assert clip_player_gradients(optimizer, None, sharded=False) is None and params[0].grad.tolist() == [3.0, 4.0]
    assert float(clip_player_gradients(optimizer, 1.0, sharded=False)) == pytest.approx(5.0)
    torch.testing.assert_close(params[0].grad, torch.tensor([0.6, 0.8]))
    params[0].grad = None
    assert clip_player_gradients(optimizer, 1.0, sharded=False) is None  # nothing to clip, no collective
    assert float(clip_player_gradients(optimizer, 1.0, sharded=True)) == 0.0  # sharded: always computed
