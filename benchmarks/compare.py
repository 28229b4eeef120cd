"""Two installs of channel-layers side by side: every workload of ``benchmarks.report``, rounds alternating.

    python -m benchmarks.compare OLD_VENV NEW_VENV [--messages N] [--rounds R] [--section Redis ...]

Each venv has a commit installed (``python -m venv /tmp/old && /tmp/old/bin/pip install -e '<checkout>[test]'``).
Round by round, each venv's ``layers bench`` runs one section's workloads (one round each); the best round per
workload is kept and the table shows new / old.  For refactors that must not cost speed (issue 14: >= 0.95x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .report import SECTIONS


def _run(venv: Path, url: str, workloads: list[str], messages: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [str(venv / "bin" / "layers"), "bench", url, "-n", str(messages), "--rounds", "1",
                   "--json", out.name]
        for workload in workloads:
            command += ["--workload", workload]
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
        try:
            data: Any = json.loads(Path(out.name).read_text() or "{}")
        except json.JSONDecodeError:
            return {}
    return {row["workload"]: float(row["rate"]) for row in data.get("best", [])  # one target: ours (redacted)
            if not row.get("error") and row.get("rate")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--section", action="append", help="section title prefix (default: all)")
    args = parser.parse_args(argv)
    print("| section | workload | old | new | new / old |\n|---|---|---:|---:|---:|")
    for title, url, _peers, workloads in SECTIONS:
        if args.section and not any(title.startswith(s) for s in args.section):
            continue
        best: dict[str, dict[str, float]] = {"old": {}, "new": {}}
        for _ in range(args.rounds):
            for which in ("old", "new"):
                for workload, rate in _run(getattr(args, which), url, workloads, args.messages).items():
                    best[which][workload] = max(rate, best[which].get(workload, 0.0))
        for workload in workloads:
            old, new = best["old"].get(workload), best["new"].get(workload)
            ratio = f"{new / old:.2f}" if old and new else "–"
            print(f"| {title} | {workload} | {old or 0:,.0f} | {new or 0:,.0f} | {ratio} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
