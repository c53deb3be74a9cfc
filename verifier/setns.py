"""The calling thread moved into a network namespace, for a while: how the verifier's driver
talks to services on namespace hosts from a process that started in the root namespace.

Linux keeps the network namespace per thread: ``setns`` moves only the caller, and sockets it
opens (and threads and processes it starts) belong to the namespace it is in then. Python 3.11
has no ``os.setns``, so this is the libc call, through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
"""Where ``ip netns add`` pins the namespaces it makes."""


@contextlib.contextmanager
def entered(namespace: str) -> Iterator[None]:
    """Run the body with this thread in the network namespace ``namespace`` (made by ``ip
    netns add``); back in the thread's own namespace afterwards, whatever happens."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")
