"""ledgerflow's engine: the flow language, planning, the store, and the runtime."""

import os as _os

__version__ = "0.1.0"

# A self-hosted finance tool never reaches an outside host on its own: every Prefect server
# ledgerflow starts (serve's, and the temporary one behind `run`, `worker`, `dlq replay`) runs
# with Prefect's analytics off. A user's own setting wins.
_os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
