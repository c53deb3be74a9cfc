"""How the benchmark's processes connect: mutual TLS, as the store's own do, or plaintext.

:func:`prepare` runs once in the main process: for the stores the benchmark starts it makes a
CA and certificates in its work directory (or, with ``insecure``, runs everything plaintext)
and says so in ``PYROSTORE_*`` variables, which the client and bare-server processes inherit;
each process then calls :func:`secure` with the role it plays. Measuring a running store
(``--ns-port``) uses the caller's own ``PYROSTORE_CERTS_DIR`` (or its data directory's).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyrostore import certs, limits, tls
from pyrostore.config import Settings

PASSED_ON = ("PYROSTORE_CERTS_DIR", "PYROSTORE_INSECURE")
"""The variables that carry the choice to every process of the benchmark."""


def prepare(workdir: Path, *, insecure: bool, own_stores: bool) -> None:
    """Decide, for this process and the processes it starts, how connections are made."""
    if insecure:
        os.environ["PYROSTORE_INSECURE"] = "1"
    elif own_stores:
        directory = workdir / "certs"
        certs.ensure(directory, hosts=["127.0.0.1"])
        os.environ["PYROSTORE_CERTS_DIR"] = str(directory)
    secure(role="admin")


def secure(*, role: str) -> None:
    """Put this process's Pyro5 in the store's terms, presenting ``role``'s certificate."""
    limits.install(Settings.from_env())
    tls.install(tls.identity_of(Settings.from_env(), default=role))


def inherited() -> dict[str, str]:
    """The choice, as ``PYROSTORE_*`` variables for a store's settings."""
    return {name: os.environ[name] for name in PASSED_ON if name in os.environ}
