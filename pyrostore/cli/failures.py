"""What an error means to the person who ran the command: its exit code (:data:`EXIT_CODES`),
its one line of text (with what to do, where there is something to do), and the same as
JSON for scripts."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import Pyro5.errors
from rich.console import Console
from rich.markup import escape

from pyrostore.config import Settings
from pyrostore.errors import (
    ConfigError,
    Forbidden,
    OutcomeUnknown,
    PyrostoreError,
    StorageError,
    Unavailable,
)

DEFAULT_NS_PORT = Settings.ns_port
EXIT_CODES = """\
  0  done
  1  the store refused the request (unknown item, out of stock, bad value, forbidden)
  2  bad usage or settings, or a data file that cannot be used (in use, read-only, full)
  3  the store could not be reached (the request did not run, or its outcome is unknown)
"""


@dataclasses.dataclass(frozen=True)
class Failure:
    """One error as the command reports it."""

    code: int
    """The exit code."""
    label: str
    """What kind of failure, in words: ``error``, ``unavailable``, ``forbidden``, ..."""
    kind: str
    """The error's type name (``NotFound``, ``Unavailable``): what scripts match on."""
    message: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    next_step: str = ""
    """A command to run next (``pyrostore outcome ID``), shown on a line of its own."""

    def to_json(self) -> str:
        """``{"error": {"type": ..., "message": ..., details...}}`` on one line."""
        body = {**self.details, "type": self.kind, "message": self.message}
        if self.next_step:
            body["next"] = self.next_step
        return json.dumps({"error": body}, default=str)

    def print(self, console: Console) -> None:
        """One red line (and the next step, if there is one) on ``console``."""
        console.print(f"[red]{self.label}:[/red] {escape(self.message)}", highlight=False)
        if self.next_step:
            console.print(f"ask later: {self.next_step}", highlight=False, markup=False)


def explain(exc: BaseException, settings: Settings | None) -> Failure | None:
    """The failure ``exc`` stands for; None for an error that is a bug, not a failure."""
    kind = type(exc).__name__
    details = dict(getattr(exc, "details", {}))
    if isinstance(exc, OutcomeUnknown):
        request_id = details.get("request_id")
        who = f" --as {settings.identity}" if settings and settings.identity else ""
        ask = f"pyrostore outcome {request_id}{who}" if request_id else ""
        return Failure(3, "outcome unknown", kind, str(exc), details, ask)
    if isinstance(exc, Unavailable) and "ns_host" in details:
        return Failure(3, "unavailable", kind, no_name_server(details), details)
    if isinstance(exc, Unavailable):
        return Failure(3, "unavailable", kind, str(exc), details)
    if isinstance(exc, ConfigError | StorageError):
        return Failure(2, "error", kind, str(exc), details)
    if isinstance(exc, Forbidden):
        identity = settings.identity if settings and settings.identity else "admin"
        return Failure(1, "forbidden", kind, f"{exc} (the certificate in use is {identity}: "
                       "see --as)", details)
    if isinstance(exc, PyrostoreError):
        return Failure(1, "error", kind, str(exc), details)
    if isinstance(exc, Pyro5.errors.CommunicationError):
        return Failure(3, "unavailable", "Unavailable", str(exc))
    return None


def no_name_server(details: dict[str, Any]) -> str:
    """Where no name server answered, and how to start a store there."""
    host, port = details["ns_host"], details.get("ns_port", DEFAULT_NS_PORT)
    flags = "".join([f" --ns-host {host}" if host != Settings.ns_host else "",
                     f" --ns-port {port}" if port != DEFAULT_NS_PORT else ""])
    return f"no name server at {host}:{port}: start the store with `pyrostore up{flags}`"


def report(failure: Failure, *, as_json: bool, err: Console) -> int:
    """Print ``failure`` (as JSON on stdout with ``--json``, else on ``err``); its exit code."""
    if as_json:
        print(failure.to_json(), flush=True)
    else:
        failure.print(err)
    return failure.code
