"""`make demo` runs scripts/flux_demo.py: its smoke mode trains (a), (b), (c) and writes the table."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_flux_demo_quick_writes_table_and_grids(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "flux_demo.py"), "--quick",
                           "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert len(results) == 3  # (a) base, (b) LoRA flow matching, (c) LoRA + latent adversarial
    for scores in results.values():
        assert sorted(scores, key=int) == ["1", "2", "4", "8"]
        assert all(0 < value < 1e4 for value in scores.values())
    assert "| (c) LoRA, + latent adversarial |" in (tmp_path / "out" / "table.md").read_text()
    assert len(list((tmp_path / "out").glob("samples_*_steps.png"))) == 4
