"""Start-up of the commands people type most: `ledgerflow --help`, `ledgerflow validate
ONE_FILE` (a shipped flow with its mappings) and `ledgerflow preview` (a charge through
a CSV and an IIF route), each a fresh process as a user runs it.

    python bench/bench_cli_start.py [RUNS]

Prints the median wall time of RUNS runs (default 7) against the targets (--help
< 0.2 s, validate and preview < 0.5 s), then each command's slowest imports per package
(python -X importtime). Bytecode is cached in a temporary folder (one
warm-up run first), as for an installed ledgerflow, even where PYTHONDONTWRITEBYTECODE
is set.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.bench_plan import FLOW, JOURNAL, PROJECT, ROW, event  # noqa: E402

TARGETS = {"--help": 0.2, "validate ONE_FILE": 0.5, "preview": 0.5}
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (.+)$")


def preview_project(root: Path) -> Path:
    (root / "flows").mkdir(parents=True)
    (root / "mappings").mkdir()
    (root / "ledgerflow.yaml").write_text(PROJECT)
    (root / "mappings" / "row.yaml").write_text(ROW)
    (root / "mappings" / "journal.yaml").write_text(JOURNAL)
    (root / "flows" / "charges.yaml").write_text(FLOW)
    (root / "event.json").write_text(json.dumps(event(1)))
    return root


def run(args: list[str], cwd: Path, env: dict, extra: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *extra, "-m", "runner.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def median_time(args: list[str], cwd: Path, env: dict, runs: int) -> tuple[float, float, int]:
    """Median wall and CPU (user + system) seconds of the process; CPU is the steadier figure
    on a busy machine."""
    rc = run(args, cwd, env).returncode          # warm-up: writes the bytecode cache
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        rc = run(args, cwd, env).returncode
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus), rc


def top_imports(args: list[str], cwd: Path, env: dict, n: int = 10) -> list[tuple[float, str]]:
    """The packages whose modules take longest to import (python -X importtime, each module's
    own time summed per top-level package), in ms."""
    err = run(args, cwd, env, ["-X", "importtime"]).stderr
    per_package: dict[str, float] = {}
    for line in err.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            package = m.group(3).strip().split(".")[0]
            per_package[package] = per_package.get(package, 0.0) + int(m.group(1)) / 1000
    return sorted(((ms, name) for name, ms in per_package.items()), reverse=True)[:n]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with tempfile.TemporaryDirectory() as d:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPYCACHEPREFIX=str(Path(d) / "pycache"), PYTHONPATH=str(ROOT), LEDGERFLOW_PROJECT="")
        pv = preview_project(Path(d) / "project")
        commands = {"--help": (["--help"], ROOT),
                    "validate ONE_FILE": (["validate", "flows/qbo-charges.yaml"], ROOT),
                    "preview": (["preview", "flows/charges.yaml", "--event", "event.json"], pv)}
        imports = {}
        for label, (args, cwd) in commands.items():
            t, cpu, rc = median_time(args, cwd, env, runs)
            verdict = "ok" if t < TARGETS[label] else "OVER"
            print(f"{label:<18} median {t * 1000:6.0f} ms wall, {cpu * 1000:4.0f} ms CPU of {runs} runs "
                  f"(exit {rc}; target < {TARGETS[label]} s wall: {verdict})")
            imports[label] = top_imports(args, cwd, env)
    for label, top in imports.items():
        print(f"\nslowest imports of `ledgerflow {label}` (ms per package, its modules' own time):")
        for ms, name in top:
            print(f"  {ms:7.1f}  {name}")


if __name__ == "__main__":
    main()
