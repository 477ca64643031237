"""`ledgerflow validate` on N flow files (default 200), and start-up times.

    python bench/bench_validate.py [N]

Prints wall time for: validate on N flows (as a subprocess, like a user runs it),
`ledgerflow --help`, and `ledgerflow validate ONE_FILE`; each the best of 3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.bench_plan import FLOW, JOURNAL, PROJECT, ROW  # noqa: E402


def best_of(cmd: list[str], cwd: Path, n: int = 3) -> tuple[float, int]:
    times, rc = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=cwd, capture_output=True, env={**os.environ, "LEDGERFLOW_PROJECT": ""}).returncode
        times.append(time.perf_counter() - t0)
    return min(times), rc


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    exe = [sys.executable, "-m", "runner.cli"]
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "flows").mkdir()
        (root / "mappings").mkdir()
        # a connection pair per flow: two flows booking charges into one connection is a validate error
        (root / "ledgerflow.yaml").write_text(PROJECT + "".join(
            f"  csv{i}: {{type: csv, directory: out/csv{i}}}\n  iif{i}: {{type: iif, directory: out/iif{i}}}\n"
            for i in range(n)))
        (root / "mappings" / "row.yaml").write_text(ROW)
        (root / "mappings" / "journal.yaml").write_text(JOURNAL)
        for i in range(n):
            (root / "flows" / f"flow{i:03d}.yaml").write_text(
                FLOW.replace("name: bench", f"name: bench-{i}").replace("target: csv", f"target: csv{i}")
                .replace("target: iif", f"target: iif{i}"))
        env_pp = {**os.environ, "PYTHONPATH": str(ROOT)}
        os.environ.update(env_pp)
        t_all, rc_all = best_of(exe + ["validate", "flows"], root)
        t_help, _ = best_of(exe + ["--help"], root)
        t_one, rc_one = best_of(exe + ["validate", "flows/flow000.yaml"], root)
    print(f"validate: {n} flow files in {t_all:.2f} s (exit {rc_all}; target < 2 s)")
    print(f"start-up: `ledgerflow --help` {t_help * 1000:.0f} ms; `ledgerflow validate ONE_FILE` {t_one * 1000:.0f} ms "
          f"(exit {rc_one}; target < 0.5 s, Prefect's server not imported)")


if __name__ == "__main__":
    main()
