"""A TCP server and a one-shot client, run inside a network namespace by tests/test_netns.py.

``serve PORT`` listens on every address of the host, answers each connection with ``ok`` and
prints ``listening`` once it accepts. ``connect ADDRESS PORT TIMEOUT`` prints one word:
``ok``, ``timeout``, or the errno name of the failure (``ECONNREFUSED``, ``EHOSTUNREACH``, ...).
"""

from __future__ import annotations

import errno
import socket
import sys


def serve(port: int) -> None:
    """Answer every connection on ``port`` with ``ok`` until killed."""
    with socket.create_server(("0.0.0.0", port), reuse_port=False) as server:
        print("listening", flush=True)
        while True:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"ok\n")


def connect(address: str, port: int, timeout: float) -> str:
    """Connect once and read the answer; what happened, in one word."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            return conn.recv(16).decode().strip() or "closed"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))


def main(argv: list[str]) -> None:
    """``serve PORT`` or ``connect ADDRESS PORT TIMEOUT``."""
    if argv[0] == "serve":
        serve(int(argv[1]))
    else:
        print(connect(argv[1], int(argv[2]), float(argv[3])), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
