"""A process that uses the project's Prefect API the way a ledgerflow command does (for tests).

``python -m tests.support.prefect_user STATE_DIR PORT [--fixed] [--limit SECONDS]`` resolves the
API (runner.operate.prefect_server), prints one JSON line (url, source, started, the record), then waits
for a line on stdin (or its end), releases the API and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runner.operate.prefect_server import PrefectAPI, ServerSettings


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("state_dir")
    p.add_argument("port", type=int)
    p.add_argument("--fixed", action="store_true")
    p.add_argument("--limit", type=float, default=600.0)
    args = p.parse_args()
    api = PrefectAPI(ServerSettings(Path(args.state_dir), port=args.port, port_fixed=args.fixed,
                                    startup_limit=args.limit)).acquire()
    print(json.dumps({"url": api.url, "source": api.source, "started": api.started,
                      "record": api.server.recorded()}), flush=True)
    sys.stdin.readline()
    api.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
