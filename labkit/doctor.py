"""`python -m labkit doctor`: what this machine is and which labs run here, in which profile.

In the labs: lab 12 §10 prints its report.
"""
from __future__ import annotations

import torch

from . import cli, env
from .labs import LABS


def lab_support() -> list[dict]:
    """For each lab: is it written yet, and which profiles can run on this machine."""
    cuda = torch.cuda.is_available()
    rows = []
    for lab in LABS:
        rows.append({
            "lab": lab.number, "title": lab.title, "ready": lab.ready,
            "smoke": lab.ready, "cpu": lab.ready,
            # `full` on a CPU still runs, but only the GPU machine does the real experiment
            "full": lab.ready and (cuda or not lab.gpu_part),
            "gpu_part": lab.gpu_part,
        })
    return rows


def model_support() -> list[dict]:
    """The pretrained models the labs use: present here or not, and how to get them."""
    from . import models, smollm2

    rows = []
    for name, use in (("lab-tiny", "mechanics (committed)"), ("lab-cot", "lab 08 (committed)"),
                      (smollm2.NAME, "real knowledge and instruction following")):
        path = models.checkpoint_dir(name)
        present = smollm2.is_installed() if name == smollm2.NAME else (path / "model.safetensors").exists()
        how = "" if present else (smollm2.missing_message() if name == smollm2.NAME
                                  else f"restore it with `git checkout -- {path.relative_to(models.DATA_DIR.parent)}`")
        rows.append({"model": name, "use": use, "present": present, "path": str(path), "how_to_get": how})
    return rows


def main(argv: list[str]) -> int:
    p = cli.parser("doctor", "Hardware report and which labs can run here.", profile=False)
    args = p.parse_args(argv)
    if args.json:
        cli.emit_json({"env": env.info(), "labs": lab_support(), "models": model_support()})
        return 0
    env.report()
    print()
    print(f"{'model':<14}{'present':<9}use")
    for row in model_support():
        print(f"{row['model']:<14}{'yes' if row['present'] else 'NO':<9}{row['use']}")
        if row["how_to_get"]:
            print(f"{'':<23}{row['how_to_get']}")
    print()
    print(f"{'lab':<4}{'title':<30}{'smoke':<7}{'cpu':<6}{'full':<6}note")
    for row in lab_support():
        mark = lambda ok: "yes" if ok else "-"  # noqa: E731
        if not row["ready"]:
            note = "coming"
        elif row["gpu_part"] and not row["full"]:
            note = f"GPU part ({row['gpu_part']}) shows committed results here"
        else:
            note = ""
        print(f"{row['lab']:<4}{row['title']:<30}{mark(row['smoke']):<7}{mark(row['cpu']):<6}{mark(row['full']):<6}{note}")
    return 0
