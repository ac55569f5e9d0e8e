"""The demo production app: a small web shop in PostgreSQL to load from.

``create_app`` builds it (deterministic for a seed and scale); ``simulate``
mutates it like live traffic; ``late_commit`` holds a transaction open so its
rows commit after rows stamped later, the case incremental loaders must not
lose.
"""

from demo_app.exceptions import DemoAppError, InvalidOption, LateTransactionClosed
from demo_app.generate import create_app
from demo_app.invariants import INVARIANTS, find_violations
from demo_app.rows import ANCHOR
from demo_app.workload import COUNT_KEYS, LateTransaction, late_commit, simulate

__all__ = [
    "ANCHOR",
    "COUNT_KEYS",
    "INVARIANTS",
    "DemoAppError",
    "InvalidOption",
    "LateTransaction",
    "LateTransactionClosed",
    "create_app",
    "find_violations",
    "late_commit",
    "simulate",
]
