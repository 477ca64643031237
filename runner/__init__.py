"""ledgerflow's engine: the flow language, planning, the store, and the runtime."""

__version__ = "0.1.0"
