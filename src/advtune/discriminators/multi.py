"""Several discriminators judged together as sub-discriminators of one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from advtune.discriminators.base import DiscriminatorOutput

__all__ = ["MultiDiscriminator"]


class MultiDiscriminator(nn.Module):
    """Runs each discriminator on the same input and concatenates their outputs.

    Each member follows the contract ``forward(x, **cond) -> (logits, features)``; the result
    lists the members' sub-discriminators in order (in insertion order for a mapping), so a
    member that has three sub-discriminators contributes three logits tensors and three
    feature lists. The losses then average over all of them (see :mod:`advtune.losses.gan`).

    Args:
        discriminators: a list of discriminators, or a mapping name → discriminator (the names
            become submodule names, which keeps checkpoints readable).
        spectral_norm: wrap every linear and convolution weight of the members in spectral
            normalization (Miyato et al. 2018), except those a member already normalises.
    """

    def __init__(self, discriminators: Sequence[nn.Module] | Mapping[str, nn.Module], spectral_norm: bool = False) -> None:
        super().__init__()
        if isinstance(discriminators, Mapping):
            members: nn.ModuleList | nn.ModuleDict = nn.ModuleDict(dict(discriminators))
        elif isinstance(discriminators, Sequence):
            members = nn.ModuleList(discriminators)
        else:
            raise TypeError(
                f"MultiDiscriminator: discriminators must be a list or dict of modules, "
                f"got {type(discriminators).__name__}"
            )
        if len(members) == 0:
            raise ValueError("MultiDiscriminator: needs at least one discriminator")
        self.discriminators = members
        if spectral_norm:
            for module in list(members.modules()):
                if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)) and not parametrize.is_parametrized(module, "weight"):
                    apply_spectral_norm(module)

    def _named_members(self) -> list[tuple[str, nn.Module]]:
        if isinstance(self.discriminators, nn.ModuleDict):
            return list(self.discriminators.items())
        return [(str(index), module) for index, module in enumerate(self.discriminators)]

    def forward(self, x: Tensor, **cond: object) -> DiscriminatorOutput:
        """Concatenate ``(logits, features)`` of every member; ``cond`` is passed to each."""
        all_logits: list[Tensor] = []
        all_features: list[list[Tensor]] = []
        for name, member in self._named_members():
            logits, features = member(x, **cond)
            if not isinstance(logits, list) or not isinstance(features, list) or len(logits) != len(features):
                raise TypeError(
                    f"MultiDiscriminator: member {name!r} must return (list of logits, list of feature lists) "
                    f"of equal length, got {type(logits).__name__} / {type(features).__name__}"
                )
            all_logits.extend(logits)
            all_features.extend(features)
        return all_logits, all_features
