"""Per-player clipping over gradient shards (FSDP): 2 CPU processes (gloo) each holding half of every
gradient clip exactly as one process clipping the whole gradient. The function alone, on hand-made
shards; tests/training/test_fsdp.py checks it inside a real FSDP run of the Flux job."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from advtune.training.sharded_clip import clip_sharded_grad_norm_

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


@pytest.mark.ddp
@pytest.mark.slow
def test_two_ranks_with_gradient_shards_clip_like_one_process_with_the_whole_gradient():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_worker, args=(rank, port, queue)) for rank in range(2)]
    for process in processes:
        process.start()
    results = dict((rank, (norm, grads)) for rank, norm, grads in (queue.get(timeout=120) for _ in processes))
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

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
