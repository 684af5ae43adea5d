"""Side-by-side sample quality over training seeds, scored by :func:`advtune.metrics.evaluate_digits`.

``--suite gan``: the same MLP nets as Lightning's GAN tutorial, 1300 generator updates each, trained
by (1) the tutorial's hand-written manual-optimization LightningModule (G step on ``G(z)``, then a D
step on a fresh ``G(z).detach()`` made after the G update, BCE, Adam(2e-4, 0.5, 0.999)), (2)
``experiment=digits_gan``, (3) ``experiment=digits_gan_stable`` (skipped with a note when absent),
(4) ``experiment=digits_dcgan`` (bigger nets). Every model draws its samples from the same seeded
noise, a seed no training or validation uses, and is scored against all 1,797 real digits.

``--suite flux``: the Flux demo (``scripts/flux_demo.py``) at 1/2/4/8 Euler steps over the seeds.

Prints the table (mean ± sample std over seeds) and writes ``results.json`` (every seed's scores)
and ``table.md`` to ``--out``.

    python benchmarks/bench_quality.py --suite gan [--seeds 0 1 2] [--steps 1300] [--out DIR]
    python benchmarks/bench_quality.py --suite flux [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SEED = 20251  # the noise every model is scored on; used by no training or validation
GAN_MODELS = ("tutorial", "digits_gan", "digits_gan_stable", "digits_dcgan")
COLUMNS = ("independent/fd", "independent/kid", "independent/precision", "independent/recall", "validation/fd")
TITLES = {"independent/fd": "FD (indep.)", "independent/kid": "KID (indep.)", "independent/precision": "precision",
          "independent/recall": "recall", "validation/fd": "FD (val. clf)"}


class TutorialGAN(L.LightningModule):
    """Lightning's "basic GAN" tutorial step, written by hand, on advtune's copies of its MLP nets."""

    def __init__(self, latent_dim: int = 100) -> None:
        super().__init__()
        from advtune.discriminators import MLPDiscriminator
        from advtune.models.gan import MLPGenerator

        self.automatic_optimization = False
        self.latent_dim = latent_dim
        self.generator, self.discriminator = MLPGenerator(latent_dim=latent_dim), MLPDiscriminator(input_shape=(1, 8, 8))

    def configure_optimizers(self):
        adam = dict(lr=2e-4, betas=(0.5, 0.999))
        return [torch.optim.Adam(self.generator.parameters(), **adam),
                torch.optim.Adam(self.discriminator.parameters(), **adam)]

    def _logit(self, images: torch.Tensor) -> torch.Tensor:
        return self.discriminator(images)[0][0].reshape(-1)

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        real = batch["image"]
        z = torch.randn(real.shape[0], self.latent_dim, device=real.device)
        ones, zeros = torch.ones(real.shape[0], device=real.device), torch.zeros(real.shape[0], device=real.device)
        self.toggle_optimizer(opt_g)
        g_loss = F.binary_cross_entropy_with_logits(self._logit(self.generator(z)), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.toggle_optimizer(opt_d)
        fake = self.generator(z).detach()  # the tutorial's second forward: after the G update
        d_loss = 0.5 * (F.binary_cross_entropy_with_logits(self._logit(real), ones)
                        + F.binary_cross_entropy_with_logits(self._logit(fake), zeros))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        self.generator.eval()
        return self.generator(torch.randn(num_samples, self.latent_dim, generator=generator)).clamp(-1, 1)


def tutorial_samples(seed: int, steps: int, num_samples: int) -> torch.Tensor:
    from advtune.data.digits import DigitsDataModule

    L.seed_everything(seed, verbose=False)
    module = TutorialGAN()
    # Lightning counts both optimizers' steps in max_steps: 2 per batch.
    trainer = L.Trainer(max_steps=2 * steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, enable_progress_bar=False, limit_val_batches=0)
    trainer.fit(module, datamodule=DigitsDataModule(batch_size=64, seed=seed))
    return module.sample(num_samples, torch.Generator().manual_seed(SAMPLE_SEED))


def experiment_samples(name: str, seed: int, steps: int, num_samples: int, out: Path) -> torch.Tensor:
    """``advtune train experiment=NAME seed=SEED`` (what the CLI runs), then samples of its last checkpoint."""
    from advtune.config import compose_config
    from advtune.runner import load_run, train

    run_dir = out / "runs" / f"{name}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, never a resumed one
    cfg = compose_config([f"experiment={name}", f"seed={seed}", f"trainer.max_steps={steps}", f"output_dir={run_dir}",
                          f"checkpoint_every={steps}", "trainer.enable_progress_bar=false"])
    train(cfg)
    module, _ = load_run(run_dir / "checkpoints" / "last.ckpt")
    weights = getattr(module, "generator_weights", contextlib.nullcontext)  # the generator EMA when on
    with weights():
        return module.task.sample(num_samples, generator=torch.Generator().manual_seed(SAMPLE_SEED))


def experiment_exists(name: str) -> bool:
    return (ROOT / "src" / "advtune" / "configs" / "experiment" / f"{name}.yaml").is_file()


def run_gan_suite(args: argparse.Namespace, out: Path) -> None:
    from advtune.metrics import evaluate_digits
    from advtune.metrics.seed_table import seed_table

    per_seed: dict[str, dict[str, list[float]]] = {}
    notes = []
    for name in args.models:
        if name != "tutorial" and not experiment_exists(name):
            notes.append(f"{name}: skipped, no such experiment config in this checkout")
            continue
        for seed in args.seeds:
            started = time.time()
            samples = (tutorial_samples(seed, args.steps, args.samples) if name == "tutorial"
                       else experiment_samples(name, seed, args.steps, args.samples, out))
            scores = evaluate_digits(samples, digits=None, min_samples=args.min_samples)
            for key, value in scores.items():
                per_seed.setdefault(name, {}).setdefault(key, []).append(value)
            print(f"[{name} seed {seed}] independent/fd {scores['independent/fd']:.2f}  "
                  f"recall {scores['independent/recall']:.3f}  ({time.time() - started:.0f} s)", flush=True)
    table = seed_table(per_seed, COLUMNS, decimals={"independent/precision": 3, "independent/recall": 3,
                                                     "independent/kid": 2}, header=TITLES)
    note = (f"{args.steps} generator updates; {args.samples} samples per model from the same noise (seed {SAMPLE_SEED}) "
            f"vs all 1,797 real digits; mean ± sample std over training seeds {args.seeds}; FD/KID/precision/recall "
            "in the independent classifier's features, FD (val. clf) in the validation classifier's. "
            + " ".join(notes))
    write_results(out, table, note, {"per_seed": per_seed, "args": vars(args)})


def write_results(out: Path, table: str, note: str, payload: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n\n" + note + "\n")
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    print("\n" + table + "\n\n" + note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["gan", "flux"], required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="default outputs/bench_quality_<suite>")
    parser.add_argument("--steps", type=int, default=1300, help="gan: generator updates of every model")
    parser.add_argument("--samples", type=int, default=None, help="samples per model (gan default 2000; flux: the demo's)")
    parser.add_argument("--models", nargs="+", default=list(GAN_MODELS), help="gan: which models")
    parser.add_argument("--min-samples", type=int, default=1000, help=argparse.SUPPRESS)  # smoke tests only
    args, rest = parser.parse_known_args()
    out = args.out or ROOT / "outputs" / f"bench_quality_{args.suite}"
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    if args.suite == "gan":
        args.samples = args.samples or 2000
        run_gan_suite(args, out)
    else:
        sys.path.insert(0, str(ROOT / "scripts"))
        import flux_demo

        samples = ["--samples", str(args.samples)] if args.samples else []
        flux_demo.main(["--seeds", *map(str, args.seeds), "--out", str(out), *samples, *rest])


if __name__ == "__main__":
    main()
