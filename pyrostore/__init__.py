"""pyrostore: a replicated, cached bookstore built from Pyro5 remote objects.

``pyrostore.Client`` is the Python API; ``pyrostore`` (or ``python -m pyrostore``) the command.
"""

from pyrostore.client import Client
from pyrostore.errors import (
    BuyUndone,
    ConflictingRequest,
    InvalidRequest,
    NotFound,
    OutcomeUnknown,
    OutOfStock,
    PyrostoreError,
    RequestExpired,
    Unavailable,
)

__all__ = [
    "BuyUndone",
    "Client",
    "ConflictingRequest",
    "InvalidRequest",
    "NotFound",
    "OutOfStock",
    "OutcomeUnknown",
    "PyrostoreError",
    "RequestExpired",
    "Unavailable",
]
__version__ = "0.1.0"
