"""The schema ledgerflow shipped before migrations (every table, as of the accounting model).

A database created by an earlier ledgerflow has no ``alembic_version`` table; it is
upgraded from here: tables it lacks are created, tables it has are kept as they are.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_existing: set[str] = set()
_created: set[str] = set()


def _table(name, *columns, **kw):
    if name not in _existing:
        op.create_table(name, *columns, **kw)
        _created.add(name)


def _index(name, table, columns, **kw):
    if table in _created:
        op.create_index(name, table, columns, **kw)


def upgrade() -> None:
    _existing.clear()
    _created.clear()
    _existing.update(sa.inspect(op.get_bind()).get_table_names())
    _table('alert_groups',
    sa.Column('group_key', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('flow', sa.String(length=255), nullable=False),
    sa.Column('target', sa.String(length=255), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('window_start', sa.Float(), nullable=False),
    sa.Column('window_seconds', sa.Float(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('reported', sa.Integer(), nullable=False),
    sa.Column('last_event_id', sa.String(length=255), nullable=True),
    sa.Column('last_delivery_id', sa.Integer(), nullable=True),
    sa.Column('last_run_id', sa.String(length=64), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('group_key')
    )
    _table('audit_log',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=255), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    _table('deliveries',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('event_id', sa.String(length=255), nullable=True),
    sa.Column('flow', sa.String(length=255), nullable=False),
    sa.Column('flow_file', sa.Text(), nullable=True),
    sa.Column('route', sa.String(length=255), nullable=False),
    sa.Column('connection', sa.String(length=255), nullable=False),
    sa.Column('connector_type', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=255), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('retry_policy', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', sa.Float(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('error_kind', sa.String(length=16), nullable=True),
    sa.Column('target_ref', sa.String(length=255), nullable=True),
    sa.Column('claimed_by', sa.String(length=255), nullable=True),
    sa.Column('lease_until', sa.Float(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('sent_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    _index('ix_deliveries_due', 'deliveries', ['state', 'next_attempt_at'], unique=False)
    _index('ix_deliveries_event', 'deliveries', ['event_id'], unique=False)
    _table('delivery_postings',
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('flow', sa.String(length=255), nullable=False),
    sa.Column('connection', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('movement', sa.String(length=255), nullable=False),
    sa.Column('balance_transaction', sa.String(length=255), nullable=True),
    sa.Column('source', sa.String(length=255), nullable=True),
    sa.Column('account', sa.String(length=255), nullable=True),
    sa.Column('books', sa.String(length=255), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('gross', sa.String(length=40), nullable=False),
    sa.Column('fee', sa.String(length=40), nullable=False),
    sa.Column('net', sa.String(length=40), nullable=False),
    sa.Column('settlement_currency', sa.String(length=3), nullable=True),
    sa.Column('settlement_amount', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('idempotency_key')
    )
    _index('ix_delivery_postings_bt', 'delivery_postings', ['balance_transaction'], unique=False)
    _index('ix_delivery_postings_source', 'delivery_postings', ['source'], unique=False)
    _table('fx_rates',
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('base', sa.String(length=3), nullable=False),
    sa.Column('quote', sa.String(length=3), nullable=False),
    sa.Column('rate_date', sa.String(length=10), nullable=False),
    sa.Column('rate', sa.String(length=64), nullable=False),
    sa.Column('fetched_at', sa.Float(), nullable=False),
    sa.UniqueConstraint('source', 'base', 'quote', 'rate_date', name='uq_fx_rate')
    )
    _table('inbox',
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=255), nullable=False),
    sa.Column('account', sa.String(length=255), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=True),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('received_at', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('flows', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('event_id')
    )
    _index('ix_inbox_status', 'inbox', ['status', 'received_at'], unique=False)
    _table('kv_cache',
    sa.Column('namespace', sa.String(length=128), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('namespace', 'key')
    )
    _table('oauth_tokens',
    sa.Column('connection', sa.String(length=255), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('connection')
    )
    _table('qbwc_requests',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ticket', sa.String(length=64), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('phase', sa.String(length=8), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('request_id', sa.String(length=50), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    _index('ix_qbwc_requests_delivery', 'qbwc_requests', ['delivery_id'], unique=False)
    _index('ix_qbwc_requests_ticket', 'qbwc_requests', ['ticket', 'state'], unique=False)
    _table('qbwc_sessions',
    sa.Column('ticket', sa.String(length=64), nullable=False),
    sa.Column('connection', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('qbxml_version', sa.String(length=8), nullable=True),
    sa.Column('company_file', sa.Text(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('round_trips', sa.Integer(), nullable=False),
    sa.Column('done', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('ticket')
    )
    _index('ix_qbwc_sessions_conn', 'qbwc_sessions', ['connection', 'state'], unique=False)
    _table('rate_limit_keys',
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('blocked_until', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    _table('rate_limit_slots',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('lease_until', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    _index('ix_rate_slots_key', 'rate_limit_slots', ['key', 'started_at'], unique=False)
    _table('recon_event_objects',
    sa.Column('event_id', sa.String(length=255), nullable=False),
    sa.Column('object_id', sa.String(length=255), nullable=False),
    sa.Column('event_type', sa.String(length=255), nullable=False),
    sa.Column('account', sa.String(length=255), nullable=True),
    sa.PrimaryKeyConstraint('event_id')
    )
    _index('ix_recon_event_objects_object', 'recon_event_objects', ['object_id'], unique=False)
    _table('recon_results',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('payout_id', sa.String(length=255), nullable=False),
    sa.Column('account', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('amount', sa.String(length=40), nullable=False),
    sa.Column('home_amount', sa.String(length=40), nullable=True),
    sa.Column('transactions', sa.Integer(), nullable=False),
    sa.Column('exceptions', sa.Text(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    _index('ix_recon_results_payout', 'recon_results', ['payout_id', 'at'], unique=False)
    _table('delivery_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('at', sa.Float(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    _index('ix_attempts_delivery', 'delivery_attempts', ['delivery_id'], unique=False)


def downgrade() -> None:
    raise NotImplementedError("ledgerflow's store is not downgraded: restore the backup taken before upgrading")
