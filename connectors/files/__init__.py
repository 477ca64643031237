"""File targets: CSV (QuickBooks Online bank import layout and free layouts) and IIF."""
