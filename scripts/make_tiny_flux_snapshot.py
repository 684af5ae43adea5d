"""Write a FLUX.1-layout snapshot with tiny random weights, loadable offline by diffusers' FluxPipeline.

    python scripts/make_tiny_flux_snapshot.py OUT_DIR [--seed 0]

Then every FLUX.1 command runs on a CPU in seconds, e.g.
``advtune train experiment=flux_lora_latent_adv pretrained=OUT_DIR data=image_folder ...``.
See :mod:`advtune.models.flux_snapshot` for what is inside.
"""

from __future__ import annotations

import argparse

from advtune.models.flux_snapshot import write_tiny_flux_snapshot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to write (created)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args()
    print(f"wrote {write_tiny_flux_snapshot(args.out_dir, seed=args.seed)}")


if __name__ == "__main__":
    main()
