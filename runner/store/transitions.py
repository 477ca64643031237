"""A delivery's legal state changes, in one table, and the check every change goes through.

Every statement that changes a delivery's state is a ``Store`` method (runner/store/db.py:
``claim``, ``finish``, ``release``, ``requeue``, ``discard``, ``close_plan_rows``); each asks
``check`` (one row, its state as read) or ``require`` (a set-based ``UPDATE ... WHERE state IN``)
before it writes, so a change this table does not list raises ``IllegalTransition`` naming the
delivery, both states and what is allowed, instead of quietly rewriting history.

Why each edge exists:

* pending/retrying -> sending: a worker claims a due row; sending -> sending: a worker takes over
  a row whose holder's lease lapsed.
* sending -> sent | retrying | dead: the attempt's outcome; sending -> retrying also when a worker
  gives back the claims of a batch that failed (``release``).
* any unsent state -> sent: a success is the target's answer and wins (a late answer after the
  lease lapsed, or a plan row closed because dispatch planned its event).
* dead -> pending: a replay (``dlq replay``); retrying -> pending: re-planned with the current
  files (``dlq replay --all``); dead -> discarded: a person discarded it with a reason.
* nothing leaves sent: the target holds the document.
"""

from __future__ import annotations

from typing import Iterable

from runner.core.errors import LedgerflowError
from runner.store.model import State

P, S, OK, R, D, X = (State.PENDING, State.SENDING, State.SENT, State.RETRYING, State.DEAD, State.DISCARDED)

ALLOWED: dict[State, frozenset[State]] = {
    P: frozenset({S, OK}),
    S: frozenset({S, OK, R, D}),
    R: frozenset({S, OK, P}),
    D: frozenset({P, OK, X}),
    X: frozenset({OK}),
    OK: frozenset(),
}


class IllegalTransition(LedgerflowError):
    """A state change the table in runner/store/transitions.py does not allow."""


def allowed(old: str, new: str) -> bool:
    return State(new) in ALLOWED[State(old)]


def _refusal(old: str, new: str, subject: str) -> IllegalTransition:
    ok = ", ".join(sorted(s.value for s in ALLOWED[State(old)])) or "nothing (it is final)"
    return IllegalTransition(f"{subject}: a delivery cannot go from {State(old).value} to {State(new).value}; "
                             f"from {State(old).value} it may go to {ok} (runner/store/transitions.py)")


def check(delivery_id: int | str, old: str, new: str) -> State:
    """``new`` as a ``State`` when ``old -> new`` is legal; ``IllegalTransition`` otherwise."""
    if not allowed(old, new):
        raise _refusal(old, new, f"delivery {delivery_id}")
    return State(new)


def require(sources: Iterable[str], new: str, operation: str) -> tuple[str, ...]:
    """The ``sources`` of a set-based change to ``new`` (for its ``WHERE state IN``), each checked."""
    out = tuple(State(s).value for s in sources)
    for old in out:
        if not allowed(old, new):
            raise _refusal(old, new, operation)
    return out
