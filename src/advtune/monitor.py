"""Health monitor of the two-player game: one status word, a warning when a bad state lasts, a summary.

:class:`HealthMonitor` reads what the step already logs (``AdversarialModule.step_metrics``) —
nothing is recomputed, no extra forward pass — on the logging steps only (``trainer.log_every_n_steps``): D accuracy on real and fake,
the mean logits (their gap), ADA's ``r_t = E[sign(D(real))]``, the adaptive weight, the ratio of the
adversarial to the base gradient norm at the generator's last layer (``g/grad_ratio``) and the
diversity of the fakes (:func:`fake_diversity`). Its inputs are smoothed over logging steps, then:

=================  ==========================================================================
status             when (smoothed values)
=================  ==========================================================================
``warm-up``        at most ``warmup_checks`` logging steps with discriminator metrics so far
``diverging``      a non-finite loss since the last check, or a mean logit beyond ``±diverging_logit``
``G collapsing``   fakes less than ``collapse_diversity`` times as spread out as the reference
``D winning``      D right on at least ``d_winning_accuracy`` of both reals and fakes
``ok``             none of the above
=================  ==========================================================================

What the D metrics can say depends on the criterion (read from the module's calculator): a ``wgan``
critic has no fixed origin (its loss ``f − r`` does not change when every logit moves by the same
amount) and no decision threshold, so its logit size and accuracies mean nothing: only non-finite
losses and collapse are judged. A ``relativistic`` D is offset-invariant too, but judges pairs: its
accuracies are meaningful and its *gap* ``|mean r − mean f|`` stands in for the logit size.

The collapse reference (``collapse_reference``): ``real``, the reals' spread (the fakes of a GAN are
samples of the data); ``warmup``, the fakes' own mean diversity over the warm-up checks, for a
generator whose fakes are not samples even when perfect — the one-step estimates ``x̂0 = E[x0 | x_t]``
of the Flux job shrink towards the mean at high noise (a perfect denoiser of unit-Gaussian latents
reads 0.69 at shift 1 and 0.41 at shift 3, near the 0.25 threshold), so there a collapse is a fall
from where the (pretrained) model started; ``null``: not judged.

A state other than ``ok`` that lasts ``patience`` logging steps prints one warning line. The monitor's
state is in the checkpoint: a resumed run reads on as the uninterrupted one (no "diverging" from the
restored non-finite count). At the end of the run rank 0 writes ``health.json`` (every check, the
counts, the warnings, what was judged) and ``health.png`` (the curves, shaded by status) into
``output_dir``.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from advtune.checks import check_choice, check_flag, check_integer, check_number

__all__ = ["HealthMonitor", "STATUS_WORDS", "fake_diversity"]

STATUS_WORDS = ("warm-up", "ok", "D winning", "G collapsing", "diverging")
# metric key -> name in health.json / the plot
_WATCHED = {
    "d/real_acc": "real_acc", "d/fake_acc": "fake_acc", "d/logits_real": "logits_real", "d/logits_fake": "logits_fake",
    "d/r_t": "r_t", "d/ada_p": "ada_p", "g/adaptive_weight": "adaptive_weight", "g/grad_ratio": "grad_ratio",
    "g/diversity": "diversity",
}
_ADVICE = {
    "D winning": "the generator gets little signal; try augment (ADA), r1_weight, lecam_weight or a smaller D learning rate",
    "G collapsing": "the fakes look alike; try r1_weight/r2_weight, ema_decay, a relativistic loss or a lower G learning rate",
    "diverging": "lower the learning rates or enable gradient clipping",
}


@torch.no_grad()
def fake_diversity(real: Tensor, fake: Tensor) -> Tensor | None:
    """Mean pairwise L2 distance of the fakes over that of the reals in one batch; ``None`` below 2 samples.

    About 1 when the fakes are as spread out as the data; towards 0 when they collapse to a few
    outputs. ``(B, ...)`` inputs, flattened per sample; a detached scalar.
    """
    if real.shape[0] < 2 or fake.shape[0] < 2:
        return None
    spread_real = torch.pdist(real.detach().flatten(1).float()).mean()
    return torch.pdist(fake.detach().flatten(1).float()).mean() / spread_real.clamp_min(1e-12)


_REFERENCES = ("real", "warmup")


def _judged_logits(loss_type: str | None) -> tuple[bool, str | None]:
    """``(accuracies mean something, how the logit size is read)`` for a GAN criterion."""
    if loss_type == "wgan":
        return False, None
    return True, "gap" if loss_type == "relativistic" else "absolute"


class HealthMonitor(L.Callback):
    """Lightning callback: ``status_word`` for the progress bar, warnings, ``health.json`` and ``health.png``.

    Args:
        output_dir: where the summary goes at the end (rank 0); ``None``: nowhere.
        warmup_checks: logging steps with discriminator metrics before the collapse and D-winning
            judgements (a fresh generator is not yet spread out, a fresh D not yet right).
        patience: logging steps a bad state must last before its warning.
        smoothing: weight of the previous smoothed value (EMA over logging steps, 0 = none).
        d_winning_accuracy: D accuracy on both reals and fakes from which D is winning.
        collapse_diversity: diversity under which G is collapsing, as a fraction of the reference.
        collapse_reference: ``"real"`` (the reals' spread), ``"warmup"`` (the fakes' mean diversity
            over the warm-up checks) or ``None`` (collapse not judged); see the module docstring.
        diverging_logit: mean logit magnitude (relativistic: the gap) beyond which the game is diverging.
        plot: write ``health.png``.
    """

    # what the judgement carries over logging steps: in the checkpoint, for a resume that reads on
    _STATE = ("history", "warnings", "_smoothed", "_status", "_streak", "_checks", "_nonfinite_seen", "_warmup_diversity")

    def __init__(self, output_dir: str | Path | None = None, warmup_checks: int = 10, patience: int = 5,
                 smoothing: float = 0.6, d_winning_accuracy: float = 0.95, collapse_diversity: float = 0.25,
                 collapse_reference: str | None = "real", diverging_logit: float = 50.0, plot: bool = True) -> None:
        check_integer("monitor.warmup_checks", warmup_checks, minimum=0)
        check_integer("monitor.patience", patience, minimum=1)
        check_number("monitor.smoothing", smoothing, minimum=0.0, below=1.0)
        check_number("monitor.d_winning_accuracy", d_winning_accuracy, above=0.0, maximum=1.0)
        check_number("monitor.collapse_diversity", collapse_diversity, minimum=0.0)
        check_number("monitor.diverging_logit", diverging_logit, above=0.0, allow_infinite=True)  # inf: never
        check_flag("monitor.plot", plot)
        if collapse_reference is not None:
            check_choice("monitor.collapse_reference", collapse_reference, _REFERENCES)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.warmup_checks, self.patience, self.smoothing = int(warmup_checks), int(patience), float(smoothing)
        self.thresholds = {"d_winning_accuracy": float(d_winning_accuracy), "collapse_diversity": float(collapse_diversity),
                           "diverging_logit": float(diverging_logit)}
        self.collapse_reference = collapse_reference
        self.plot = bool(plot)
        self.loss_type: str | None = None  # the module's criterion, read at the start of training
        self.history: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self._smoothed: dict[str, float] = {}
        self._status = "warm-up"
        self._streak = 0  # logging steps in the current status
        self._checks = 0  # logging steps with discriminator metrics
        self._nonfinite_seen = 0.0
        self._warmup_diversity: list[float] = []  # the fakes' diversity at the warm-up checks
        self._restored = False  # load_state_dict ran (a resume from a checkpoint with this state)

    @property
    def status_word(self) -> str:
        """``warm-up``, ``ok``, ``D winning``, ``G collapsing`` or ``diverging``."""
        return self._status

    def diversity_reference(self) -> float | None:
        """The diversity a healthy generator shows (1: the reals'); ``None`` while unknown or not judged."""
        if self.collapse_reference == "real":
            return 1.0
        if self.collapse_reference == "warmup" and self._checks > self.warmup_checks and self._warmup_diversity:
            return sum(self._warmup_diversity) / len(self._warmup_diversity)
        return None

    def _judge(self, values: dict[str, float], nonfinite: bool) -> str:
        s, t = self._smoothed, self.thresholds
        accuracies, logit_size = _judged_logits(self.loss_type)
        if nonfinite or any(not math.isfinite(v) for v in values.values()):
            return "diverging"
        real, fake = s.get("logits_real", 0.0), s.get("logits_fake", 0.0)
        size = {"absolute": max(abs(real), abs(fake)), "gap": abs(real - fake), None: 0.0}[logit_size]
        if size > t["diverging_logit"]:
            return "diverging"
        if self._checks <= self.warmup_checks:
            return "warm-up"
        reference = self.diversity_reference()
        if reference is not None and s.get("diversity", math.inf) < t["collapse_diversity"] * reference:
            return "G collapsing"
        if accuracies and min(s.get("real_acc", 0.0), s.get("fake_acc", 0.0)) >= t["d_winning_accuracy"]:
            return "D winning"
        return "ok"

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.loss_type = getattr(getattr(pl_module, "calculator", None), "loss_type", None)
        guard = getattr(pl_module, "nonfinite", None)
        if guard is not None and not self._restored:  # resumed without this state: the restored count is old news
            self._nonfinite_seen = float(guard.total)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not getattr(pl_module, "logging_step", False):
            return
        logged = pl_module.step_metrics  # floats, gathered by the module on logging steps
        values = {name: float(logged[key]) for key, name in _WATCHED.items() if key in logged}
        nonfinite_total = float(logged.get("train/nonfinite_skipped", 0.0))
        nonfinite, self._nonfinite_seen = nonfinite_total > self._nonfinite_seen, nonfinite_total
        if "real_acc" in values:
            self._checks += 1
            if self._checks <= self.warmup_checks and math.isfinite(values.get("diversity", math.nan)):
                self._warmup_diversity.append(values["diversity"])
        for name, value in values.items():
            old = self._smoothed.get(name)
            finite = math.isfinite(value)
            self._smoothed[name] = value if old is None or not finite else self.smoothing * old + (1 - self.smoothing) * value
        status = self._judge(values, nonfinite)
        self._streak = self._streak + 1 if status == self._status else 1
        self._status = status
        step = int(trainer.global_step)
        self.history.append({"step": step, "status": status, **values})
        if status in _ADVICE and self._streak == self.patience:
            shown = ", ".join(f"{k} {v:.3g}" for k, v in self._smoothed.items())
            message = f"health: '{status}' for {self.patience} logging steps (step {step}; {shown}): {_ADVICE[status]}"
            self.warnings.append(message)
            warnings.warn(message, stacklevel=2)
        logged["health/status"] = float(STATUS_WORDS.index(status))  # in the module's row of this step

    def summary(self) -> dict[str, Any]:
        """What ``health.json`` holds."""
        counts = {word: sum(row["status"] == word for row in self.history) for word in STATUS_WORDS}
        accuracies, logit_size = _judged_logits(self.loss_type)
        judged = {"criterion": self.loss_type, "d_winning": accuracies, "logit_size": logit_size,
                  "collapse_reference": self.collapse_reference, "diversity_reference": self.diversity_reference()}
        return {"final_status": self._status, "status_counts": counts, "warnings": self.warnings, "judged": judged,
                "thresholds": self.thresholds, "status_codes": dict(enumerate(STATUS_WORDS)), "history": self.history}

    def state_dict(self) -> dict[str, Any]:
        """The judgement's state (plain containers, so a weights-only load reads it)."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self._STATE}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name in self._STATE:
            if name in state_dict:
                setattr(self, name, copy.deepcopy(state_dict[name]))
        self._restored = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.output_dir is None or not trainer.is_global_zero:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "health.json").write_text(json.dumps(self.summary(), indent=1))
        if self.plot and self.history:
            from advtune.monitor_plot import plot_health

            lines = {k: v for k, v in self.thresholds.items() if k != "collapse_diversity"}
            reference = self.diversity_reference()
            if reference is not None:  # the collapse line in the plot's units
                lines["collapse_diversity"] = self.thresholds["collapse_diversity"] * reference
            plot_health(self.history, lines, self.output_dir / "health.png")
