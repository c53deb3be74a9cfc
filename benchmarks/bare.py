"""The transport's own cost: a bare Pyro5 object, served in a process of its own.

:class:`BareServer` runs :class:`Echo` (one method that returns a constant book, the dict a
lookup answers) in a Pyro5 daemon on 127.0.0.1, in a ``spawn`` process, the way the store
serves its objects (thread-pool server, ``SOCK_NODELAY``, the same TLS and limits); a
:class:`~benchmarks.pool.Job` of kind ``bare`` times calls to it.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import Pyro5.api

BOOK = {"item": 1, "title": "How to get a good grade in 677 in 20 minutes a day",
        "topic": "distributed systems", "stock": 1000, "cost": 30.0, "version": 1}
"""What a lookup answers, in size and shape."""


@Pyro5.api.expose
class Echo:
    """The smallest useful remote object."""

    def ping(self) -> dict[str, object]:
        """A constant book: nothing to compute, only what a lookup must serialize."""
        return BOOK


def serve_echo(connection: Connection) -> None:
    """Serve one :class:`Echo` until terminated; send its URI through ``connection`` first."""
    from benchmarks.security import secure

    secure(role="node")
    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    connection.send(str(daemon.register(Echo(), objectId="bench.echo")))
    connection.close()
    daemon.requestLoop()


class BareServer:
    """A context manager: ``with BareServer() as uri: ...``; the process ends on exit."""

    def __init__(self) -> None:
        self._process: BaseProcess | None = None

    def __enter__(self) -> str:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self._process = context.Process(target=serve_echo, args=(theirs,), daemon=True,
                                        name="bench-bare-pyro5")
        self._process.start()
        theirs.close()
        try:
            if not ours.poll(30):
                raise TimeoutError("the bare Pyro5 server did not start within 30 s")
            uri: str = ours.recv()
        except BaseException:
            self.__exit__()
            raise
        finally:
            ours.close()
        return uri

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None
