"""16-bit mixed precision with one loss scaler per player.

One shared ``GradScaler`` couples the players: an overflow in the discriminator's gradients
halves the generator's scale too, and the growth interval counts both players' steps. Here each
player has its own scaler, chosen from ``module.active_player``; both are saved in checkpoints.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from lightning.pytorch.plugins.precision import MixedPrecision

__all__ = ["TwoPlayerMixedPrecision"]


class TwoPlayerMixedPrecision(MixedPrecision):
    """``precision="16-mixed"`` for :class:`~advtune.training.AdversarialModule`.

    Args:
        device: ``"cuda"`` (or ``"cpu"`` for tests: CPU autocast supports float16).
    """

    def __init__(self, device: str = "cuda") -> None:
        super().__init__("16-mixed", device, scaler=torch.amp.GradScaler(device))
        self.scalers = {"g": self.scaler, "d": torch.amp.GradScaler(device)}

    def _select(self, module: Any) -> None:
        # Phase is a str enum, so "g"/"d" index the scalers directly.
        self.scaler = self.scalers[str(getattr(module, "active_player", "g").value)]

    def pre_backward(self, tensor: torch.Tensor, module: Any) -> torch.Tensor:  # type: ignore[override]
        self._select(module)
        return super().pre_backward(tensor, module)

    def optimizer_step(self, optimizer: Any, model: Any, closure: Callable[[], Any], **kwargs: Any) -> Any:  # type: ignore[override]
        self._select(model)
        return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {player: scaler.state_dict() for player, scaler in self.scalers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for player, scaler in self.scalers.items():
            scaler.load_state_dict(state_dict[player])
