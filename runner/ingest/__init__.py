"""Ingest: Stripe events in (webhooks, catch-up) and planned into delivery rows (dispatch)."""
