"""Sub-commands of the ledgerflow CLI, one module per area."""
