"""uvicorn with connection hygiene: what ``python -m serve http`` runs.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but waits for a request's head forever: a
client that connects and sends nothing, or trickles its headers a byte at a time, would hold a connection open for
good. :func:`guarded_protocol` adds the missing timer (the request head must be complete within ``header_timeout``
seconds of the connection or of the previous response) and a cap on open connections (one more is answered 503 in
the API's JSON error shape and closed). The body's own timeout and size limit are :class:`serve.api.BodyLimit`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ConnectionLimits:
    """Socket-level limits of the HTTP server."""

    header_timeout_s: float = 10.0  # the request head must arrive within this
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 1000  # open connections; one more is answered 503 and closed


def busy_response(max_connections: int) -> bytes:
    """A raw HTTP 503 in the API's error shape, written before any request is read."""
    body = json.dumps({"error": f"server busy: {max_connections} connections are open; retry later",
                       "error_type": "overloaded", "field": None}).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "retry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def guarded_protocol(limits: ConnectionLimits):
    """uvicorn's h11 protocol class with a request-head timeout and a connection cap."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                transport.write(busy_response(limits.max_connections))
                transport.close()
                return
            self.arm_head_timer()

        def arm_head_timer(self) -> None:
            self.disarm_head_timer()
            self.head_timer = self.loop.call_later(limits.header_timeout_s, self.head_too_slow)

        def disarm_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def head_too_slow(self) -> None:
            self.head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no complete request head
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:  # the head is complete: the body has its own timeout
                self.disarm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self.arm_head_timer()  # the next request's head, on a kept-alive connection

        def connection_lost(self, exc) -> None:
            self.disarm_head_timer()
            super().connection_lost(exc)

    return GuardedH11Protocol


def run(app, *, host: str, port: int, log_level: str, limits: ConnectionLimits = ConnectionLimits()) -> None:
    """Serve app with uvicorn under these connection limits (h11, the pure-Python HTTP/1.1 parser)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, http=guarded_protocol(limits),
                timeout_keep_alive=limits.keep_alive_s)
