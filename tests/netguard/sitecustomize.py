"""Loaded by every Python process the tests start with this folder on PYTHONPATH (notebook kernels too).

Records any attempt to reach a non-loopback address, or to resolve a host name other than the local
machine, into the file named by STUDY_NETGUARD_LOG; the test then asserts that the file stays empty.
Local traffic (the notebook kernel's own loopback connections, Unix sockets) is allowed.
"""

import os
import socket
import traceback

_LOG = os.environ.get("STUDY_NETGUARD_LOG")
_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None, socket.gethostname()}


def _record(what: str) -> None:
    with open(_LOG, "a") as log:
        log.write(f"pid {os.getpid()}: {what}\n{''.join(traceback.format_stack(limit=8))}\n")


def _is_local(address: object) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = address[0]
    return host in _LOCAL_NAMES or str(host).startswith("127.")


if _LOG:
    _connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):  # noqa: ANN001
        if not _is_local(address):
            _record(f"connect to {address!r}")
        return _connect(self, address)

    def connect_ex(self, address):  # noqa: ANN001
        if not _is_local(address):
            _record(f"connect_ex to {address!r}")
        return _connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):  # noqa: ANN001
        if host not in _LOCAL_NAMES and not str(host).startswith("127."):
            _record(f"name lookup of {host!r}")
        return _getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
