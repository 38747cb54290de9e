"""A TCP proxy on 127.0.0.1 that a test can cut, stall and restore, to take a database away.

The server behind it keeps running for everyone else; only the app that connects through
the proxy loses it. ``cut()`` drops every connection and refuses new ones (a server that is
down), ``stall()`` drops them and accepts new ones without ever answering (a network that
swallows packets: only a client-side connect timeout ends the wait), ``freeze()`` keeps
every connection open and forwards nothing more on any of them (a server that stopped
answering: only a client-side deadline ends the wait), ``restore()`` forwards again on the
same port.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

OPEN, REFUSING, STALLING, FROZEN = "open", "refusing", "stalling", "frozen"


class TcpProxy:
    """Forwards connections from ``127.0.0.1:<port>`` to ``upstream``, until told otherwise."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        """The port the app connects to; chosen by the OS at ``start()`` and kept after."""
        self.mode = OPEN
        self.connections = 0
        """Connections accepted in all (forwarded or stalled)."""
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._stalled: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False

    # -- control ---------------------------------------------------------------------------

    def start(self) -> int:
        """Listen on a free port of 127.0.0.1 and forward; returns the port."""
        self._listen()
        return self.port

    def cut(self) -> None:
        """Drop every connection and refuse new ones: to a client the server is down."""
        with self._lock:
            self.mode = REFUSING
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._drop_all()

    def stall(self) -> None:
        """Drop every connection; accept new ones but never forward or answer."""
        with self._lock:
            self.mode = STALLING
        self._drop_all()
        self._listen()

    def freeze(self) -> None:
        """Keep every connection open, but forward nothing on them, nor on new ones."""
        with self._lock:
            self.mode = FROZEN

    def restore(self) -> None:
        """Forward new connections to the server again, on the same port."""
        with self._lock:
            was_frozen, self.mode = self.mode == FROZEN, OPEN
        if was_frozen:  # what they sent was swallowed: their conversations cannot go on
            self._drop_all()
        self._drop_stalled()
        self._listen()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._drop_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- machinery -------------------------------------------------------------------------

    def _listen(self) -> None:
        with self._lock:
            if self._listener is not None or self._closed:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("127.0.0.1", self.port))
            except OSError:
                listener.close()
                raise
            listener.listen(128)
            listener.settimeout(0.1)
            self.port = listener.getsockname()[1]
            self._listener = listener
        self._spawn(self._accept_loop, listener)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by cut() or close()
                return
            client.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets.add(client)
                if self.mode in (STALLING, FROZEN):
                    self._stalled.add(client)
                    continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                self._drop(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.add(upstream)
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.mode != FROZEN:
                    target.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source)
            self._drop(target)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
            self._stalled.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv()
        except OSError:
            pass
        sock.close()

    def _drop_all(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._drop(sock)

    def _drop_stalled(self) -> None:
        with self._lock:
            stalled = list(self._stalled)
        for sock in stalled:
            self._drop(sock)
