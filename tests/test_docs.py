"""docs/OPTIONS.md is generated from the shipped configs and must be current."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_options_page_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_options.py"), "--check"])
    assert proc.returncode == 0, "docs/OPTIONS.md is stale: run `python scripts/gen_options.py`"


def test_options_page_lists_every_engine_option():
    text = (ROOT / "docs" / "OPTIONS.md").read_text()
    for key in ("trainer.max_steps", "schedule.discriminator_steps", "module.generator_clip_norm",
                "adversarial.r1_weight", "checkpoint_every"):
        assert f"`{key}`" in text
