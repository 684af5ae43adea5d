"""Write docs/OPTIONS.md from the shipped configs: every option, its type, default and meaning.

The meaning is the YAML comment on the option's line (or the comment lines just above it), so the
configs stay the single source; the FLUX.1 profile's table comes from ``advtune.profiles`` (value and
source of each default). ``tests/test_docs.py`` fails when the page is out of date.

    python scripts/gen_options.py          # rewrite docs/OPTIONS.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "src" / "advtune" / "configs"
OUT = ROOT / "docs" / "OPTIONS.md"
LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w]*):\s*(?P<value>[^#]*?)\s*(#\s?(?P<comment>.*))?$")

HEADER = """# Options

Every option of every shipped config, generated from the YAML files by `scripts/gen_options.py`
(do not edit by hand). Set any of them on the command line, e.g.
`advtune train experiment=digits_gan adversarial.loss_type=hinge trainer.max_steps=500`.
A group is chosen with `group=option` (`discriminator=patchgan`); its keys are then under `group.`.
Experiments (`experiment=NAME`) pick options of each group and override some of their values.

Step units: `trainer.max_steps`, `checkpoint_every` count **generator updates**; everything in
`schedule.*` and `adversarial.warmup_steps` counts **training steps** (batches since the run began).
"""


def _type(value: str) -> str:
    if value in ("", "null"):
        return "—" if value == "" else "null/any"
    if value in ("true", "false"):
        return "bool"
    if value.startswith("["):
        return "list"
    if value.startswith("{"):
        return "dict"
    if value.startswith("${"):
        return "interpolation"
    try:
        int(value)
        return "int"
    except ValueError:
        pass
    try:
        float(value)
        return "float"
    except ValueError:
        return "str"


def describe(path: Path) -> list[tuple[str, str, str, str]]:
    rows, stack, pending = [], [], []
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            if stripped.startswith("# @package") or not stripped:
                pending = []
            else:
                pending.append(stripped.lstrip("# ").strip())
            continue
        match = LINE.match(raw)
        if not match or stripped.startswith("- "):
            pending = []
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        key = ".".join(k for _, k in stack)
        value = match["value"]
        meaning = match["comment"] or " ".join(pending)
        pending = []
        if key == "defaults" or key.startswith("defaults."):
            continue
        rows.append((key, _type(value), value if value else "(section)", meaning.replace("|", "\\|")))
    return rows


PROFILE_INTRO = """## FLUX.1 profile (`profile=auto`)

With `pretrained=` a FLUX.1 snapshot and a Flux adapter experiment (`experiment=flux_lora_latent_adv`),
these values replace the experiment's digits-toy defaults (`advtune.profiles`): `flux1-dev` for a
guidance-distilled snapshot, `flux1-schnell` otherwise. Keys given on the command line keep the
user's value; `profile=none` keeps the experiment's own. The header line names the profile, and the
run's `config.yaml` holds the values used. Rows marked LoRA apply to `task.adapter_type=lora` only
(LyCORIS keeps the experiment's lr and rank); rows marked "fm job" only to the flow-matching / latent
adversarial job, "distillation" only to `experiment=flux_lora_distill` (whose rank, length and
adversarial weights are its own).
"""


def render_profile() -> list[str]:
    """The profile table, from ``advtune.profiles.FLUX1_PROFILE`` (value and source of every default)."""
    sys.path.insert(0, str(ROOT / "src"))
    from advtune.profiles import FLUX1_PROFILE

    rows = [PROFILE_INTRO, "| option | value | source |", "|---|---|---|"]
    for entry in FLUX1_PROFILE:
        scope = " (LoRA)" if entry.lora_only else ""
        scope += {("lora",): " (fm job)", ("distill",): " (distillation)"}.get(tuple(entry.jobs), "")
        rows.append(f"| `{entry.key}`{scope} | {entry.shown} | {entry.source.replace('|', chr(92) + '|')} |")
    return rows


def render() -> str:
    parts = [HEADER]
    root = CONFIG_DIR / "config.yaml"
    parts.append("## Top level (`config.yaml`)\n\n| option | type | default | meaning |\n|---|---|---|---|")
    parts += [f"| `{k}` | {t} | `{v}` | {m} |" for k, t, v, m in describe(root)]
    parts.append("")
    parts += render_profile()
    for group in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir()):
        parts.append(f"\n## Group `{group.name}`\n")
        for option in sorted(group.glob("*.yaml")):
            rows = describe(option)
            intro = [ln.lstrip("# ").strip() for ln in option.read_text().splitlines()
                     if ln.startswith("#") and not ln.startswith("# @package")]
            parts.append(f"### `{group.name}={option.stem}`\n")
            if intro:
                parts.append(" ".join(intro[:6]) + "\n")
            if rows:
                prefix = "" if group.name == "experiment" else f"{group.name}."
                parts.append("| option | type | default | meaning |\n|---|---|---|---|")
                parts += [f"| `{prefix}{k}` | {t} | `{v}` | {m} |" for k, t, v, m in rows]
            parts.append("")
    return "\n".join(parts) + "\n"


def documented_options(choices: dict[str, str]) -> dict[str, str]:
    """Key -> documented type of every option of ``config.yaml`` and of the chosen group options.

    ``choices``: group -> option, as an experiment picks them (Hydra's ``runtime.choices``); the
    experiment's own file counts too (its keys are already full). The same rows as the tables above:
    ``tests/test_config_values.py`` sweeps wrong values over them.
    """
    options = {key: kind for key, kind, _, _ in describe(CONFIG_DIR / "config.yaml")}
    for group, option in choices.items():
        path = CONFIG_DIR / group / f"{option}.yaml"
        if option and path.is_file():
            prefix = "" if group == "experiment" else f"{group}."
            options.update({f"{prefix}{key}": kind for key, kind, _, _ in describe(path)})
    return options


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT} ({text.count(chr(10))} lines)")
