"""Table definitions. Feature modules add their tables to ``metadata`` here."""

from __future__ import annotations

from sqlalchemy import (
                        BigInteger,
                        Column,
                        Float,
                        ForeignKey,
                        Index,
                        Integer,
                        LargeBinary,
                        MetaData,
                        String,
                        Table,
                        Text,
                        UniqueConstraint,
)

metadata = MetaData()

# Every event that got in, once (primary key = Stripe event id).
inbox = Table(
    "inbox", metadata,
    Column("event_id", String(255), primary_key=True),
    Column("type", String(255), nullable=False),
    Column("account", String(255)),                    # Connect account, when any
    Column("created", BigInteger),                     # Stripe's created (unix)
    Column("payload", Text, nullable=False),           # the event JSON, as received
    Column("source", String(32), nullable=False),      # webhook:<endpoint>, catch-up, cli
    Column("received_at", Float, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),  # pending|dispatched|ignored|failed
    Column("flows", Text),                             # flows that planned it
    Column("error", Text),
    Column("updated_at", Float),
)
Index("ix_inbox_status", inbox.c.status, inbox.c.received_at)

# One row per operation. States: pending -> sending -> sent | retrying -> ... | dead | discarded
deliveries = Table(
    "deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("event_id", String(255)),
    Column("flow", String(255), nullable=False),
    Column("flow_file", Text),
    Column("route", String(255), nullable=False),
    Column("connection", String(255), nullable=False),
    Column("connector_type", String(64), nullable=False),
    Column("action", String(255), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False, default=6),
    Column("retry_policy", Text),                      # JSON: first_delay, max_delay, backoff, jitter
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text),
    Column("error_kind", String(16)),
    Column("target_ref", String(255)),
    Column("claimed_by", String(255)),
    Column("lease_until", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("sent_at", Float),
)
Index("ix_deliveries_due", deliveries.c.state, deliveries.c.next_attempt_at)
Index("ix_deliveries_event", deliveries.c.event_id)

attempts = Table(
    "delivery_attempts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", Integer, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", Float, nullable=False),
    Column("outcome", String(16), nullable=False),      # sent|retry|dead|throttled
    Column("error", Text),
    Column("worker", String(255)),
    Column("flow_run_id", String(64)),
)
Index("ix_attempts_delivery", attempts.c.delivery_id)

# Audit trail for human actions (dead-letter discards and replays, reconnects).
audit = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(255)),
    Column("action", String(64), nullable=False),
    Column("subject", String(255)),
    Column("detail", Text),
)

# OAuth tokens, encrypted; version increments on every rotation (optimistic lock).
tokens = Table(
    "oauth_tokens", metadata,
    Column("connection", String(255), primary_key=True),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# FX rates cache: one row per (source, base, quote, date).
fx_rates = Table(
    "fx_rates", metadata,
    Column("source", String(32), nullable=False),
    Column("base", String(3), nullable=False),
    Column("quote", String(3), nullable=False),
    Column("rate_date", String(10), nullable=False),
    Column("rate", String(64), nullable=False),
    Column("fetched_at", Float, nullable=False),
    UniqueConstraint("source", "base", "quote", "rate_date", name="uq_fx_rate"),
)

# Small key/value cache for connectors (name look-ups, ids).
kv = Table(
    "kv_cache", metadata,
    Column("namespace", String(128), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Cross-worker rate limits (runner/store/limiter.py): one row per limited key (locked while
# deciding; blocked_until after a 429), and one row per request started under that key.
rate_keys = Table(
    "rate_limit_keys", metadata,
    Column("key", String(255), primary_key=True),
    Column("blocked_until", Float, nullable=False, default=0.0),
)

rate_slots = Table(
    "rate_limit_slots", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("lease_until", Float),                      # set while in flight; NULL once released
)
Index("ix_rate_slots_key", rate_slots.c.key, rate_slots.c.started_at)

# Slack alert grouping (runner/deliver/alerts.py): one row per flow + target + error signature;
# identical failures within a window are counted, not sent again.
alert_groups = Table(
    "alert_groups", metadata,
    Column("group_key", String(64), primary_key=True),   # sha1 of kind, flow, target, error signature
    Column("kind", String(16), nullable=False),          # dead | run-failed
    Column("flow", String(255), nullable=False),
    Column("target", String(255)),
    Column("error", Text),                               # the first error of the window (scrubbed)
    Column("window_start", Float, nullable=False),
    Column("window_seconds", Float, nullable=False),
    Column("count", Integer, nullable=False),            # occurrences in this window
    Column("reported", Integer, nullable=False),         # occurrences already in a sent message
    Column("last_event_id", String(255)),
    Column("last_delivery_id", Integer),
    Column("last_run_id", String(64)),
    Column("updated_at", Float, nullable=False),
)

# QuickBooks Web Connector sessions (one per authenticate) and the qbXML requests each carried:
# requestID -> delivery, so a restart or a broken-off session loses nothing.
qbwc_sessions = Table(
    "qbwc_sessions", metadata,
    Column("ticket", String(64), primary_key=True),
    Column("connection", String(255), nullable=False),
    Column("state", String(16), nullable=False),        # open|closed|abandoned
    Column("qbxml_version", String(8)),
    Column("company_file", Text),
    Column("last_error", Text),
    Column("round_trips", Integer, nullable=False, default=0),
    Column("done", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_qbwc_sessions_conn", qbwc_sessions.c.connection, qbwc_sessions.c.state)

qbwc_requests = Table(
    "qbwc_requests", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ticket", String(64), nullable=False),
    Column("delivery_id", Integer, nullable=False),
    Column("phase", String(8), nullable=False),          # add|query|lookup
    Column("state", String(10), nullable=False),         # queued|sent|answered|released
    Column("request_id", String(50)),
    Column("status_code", Integer),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_qbwc_requests_ticket", qbwc_requests.c.ticket, qbwc_requests.c.state)
Index("ix_qbwc_requests_delivery", qbwc_requests.c.delivery_id)

# Payout reconciliation: which Stripe object each inbox event carries (filled
# incrementally from the inbox), so a balance transaction's source finds its
# bookings by an index instead of a scan of event payloads.
recon_event_objects = Table(
    "recon_event_objects", metadata,
    Column("event_id", String(255), primary_key=True),
    Column("object_id", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("account", String(255)),
)
Index("ix_recon_event_objects_object", recon_event_objects.c.object_id)

# One row per reconciled payout per run: status, totals and exceptions (JSON).
recon_results = Table(
    "recon_results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("payout_id", String(255), nullable=False),
    Column("account", String(255)),
    Column("status", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", String(40), nullable=False),
    Column("home_amount", String(40)),
    Column("transactions", Integer, nullable=False),
    Column("exceptions", Text, nullable=False),
    Column("at", Float, nullable=False),
)
Index("ix_recon_results_payout", recon_results.c.payout_id, recon_results.c.at)

# The accounting model: the money movement each delivery books (runner/language/posting), so the payout
# reconciliation matches a balance transaction to its bookings by the movement's own keys and
# in the books' currency, whatever the target's payload looks like.
delivery_postings = Table(
    "delivery_postings", metadata,
    Column("idempotency_key", String(255), primary_key=True),   # the delivery's
    Column("flow", String(255), nullable=False),
    Column("connection", String(255), nullable=False),
    Column("kind", String(64), nullable=False),                  # charge, refund, dispute, ...
    Column("movement", String(255), nullable=False),             # ch_, re_, fee_, fr_, tr_, po_ or txn_ id
    Column("balance_transaction", String(255)),
    Column("source", String(255)),
    Column("account", String(255)),                              # the Stripe account it happened on
    Column("books", String(255), nullable=False),                # platform | acct_...
    Column("currency", String(3), nullable=False),               # home currency of every amount below
    Column("gross", String(40), nullable=False),
    Column("fee", String(40), nullable=False),
    Column("net", String(40), nullable=False),
    Column("settlement_currency", String(3)),
    Column("settlement_amount", String(40)),
    Column("created_at", Float, nullable=False),
)
Index("ix_delivery_postings_bt", delivery_postings.c.balance_transaction)
Index("ix_delivery_postings_source", delivery_postings.c.source)
