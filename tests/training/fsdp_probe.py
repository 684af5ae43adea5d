"""``python fsdp_probe.py RECORD_DIR train ...``: ``advtune train`` with two probes (a test helper).

Lightning starts the other ranks by re-running this command line, so every rank is probed.

- Every per-player clip under FSDP also gathers the whole gradient of that player
  (``summon_full_params(with_grads=True)``) and computes its norm in one place, before and after
  clipping; each rank writes its records to ``RECORD_DIR/clip_rank{r}.json``.
- At the end of training rank 0 writes every weight (gathered: the frozen base, the LoRA, the
  discriminator) to ``RECORD_DIR/weights.safetensors``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

import advtune.training.callbacks as callbacks
import advtune.training.sharded_clip as sharded_clip
from advtune.cli import main
from advtune.training.strategies import gathered_weights

RECORD_DIR = Path(sys.argv[1])
RECORDS: list[dict] = []
MODULES: list[torch.nn.Module] = []


def _whole_gradient_norm(params: list[torch.nn.Parameter]) -> float:
    with contextlib.ExitStack() as stack:
        for root in FSDP.fsdp_modules(MODULES[0], root_only=True):
            stack.enter_context(FSDP.summon_full_params(root, writeback=False, with_grads=True))
        grads = [p.grad.double() for p in params if p.grad is not None]
        return float(torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt())


def _probed_clip(parameters, max_norm, group=None):
    params = list(parameters)  # this rank's shards that have a gradient: not the same list on every rank
    module = MODULES[0]
    player = module.player_parameters(module.active_player)
    before = _whole_gradient_norm(player)
    norm = _clip(params, max_norm, group)
    RECORDS.append({"player": module.active_player.value, "sharded_norm": float(norm), "whole_norm": before,
                    "whole_norm_after": _whole_gradient_norm(player), "max_norm": float(max_norm),
                    "shard_elements": sum(p.numel() for p in params)})
    return norm


class _Probe(Callback):
    def on_fit_start(self, trainer, pl_module):
        MODULES.append(pl_module)

    def on_train_end(self, trainer, pl_module):
        (RECORD_DIR / f"clip_rank{dist.get_rank()}.json").write_text(json.dumps(RECORDS))
        with gathered_weights(pl_module):
            if dist.get_rank() == 0:
                from safetensors.torch import save_file

                save_file({k: v.detach().clone().contiguous() for k, v in pl_module.named_parameters()},
                          str(RECORD_DIR / "weights.safetensors"))


def _with_probe(*args, **kwargs):
    return _default_callbacks(*args, **kwargs) + [_Probe()]


_clip, sharded_clip.clip_sharded_grad_norm_ = sharded_clip.clip_sharded_grad_norm_, _probed_clip
_default_callbacks, callbacks.default_callbacks = callbacks.default_callbacks, _with_probe

if __name__ == "__main__":
    RECORD_DIR.mkdir(parents=True, exist_ok=True)
    sys.exit(main(sys.argv[2:]))
