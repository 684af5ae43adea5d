"""`make demo` runs scripts/flux_demo.py: its smoke mode trains (a), (b), (c) per seed and writes the tables."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_flux_demo_quick_writes_seed_tables_and_grids(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "flux_demo.py"), "--quick", "--seeds", "0", "1",
                           "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    per_seed = json.loads((tmp_path / "out" / "results.json").read_text())["per_seed"]
    assert sorted(per_seed) == ["adv", "base", "fm"]  # (a) base, (b) LoRA flow matching, (c) + latent adversarial
    for model, cells in per_seed.items():
        for steps in (1, 2, 4, 8):
            values = cells[f"independent/fd@{steps}"]
            assert len(values) == (1 if model == "base" else 2)  # the base is one model, the LoRAs one per seed
            assert all(0 < v < 1e5 for v in values)
            assert all(0 <= v <= 1 for v in cells[f"independent/recall@{steps}"])
            if model != "base":  # the training seed reaches the LoRA runs: the two seeds score differently
                assert values[0] != values[1]
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| (c) LoRA + latent adversarial |" in table and " ± " in table and "2 training seeds" in table
    for title in ("FD @ 1 step", "recall @ 8 steps", "precision @ 2 steps", "FD (val. clf) @ 4 steps"):
        assert title in table
    assert len(list((tmp_path / "out").glob("samples_*_steps.png"))) == 4
