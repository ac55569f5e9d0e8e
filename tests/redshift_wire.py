"""A PostgreSQL server that answers like Redshift at connection time, for tests.

dbt-redshift connects with `redshift_connector`, which sends startup parameters
PostgreSQL refuses (`client_protocol_version`, `driver_version`, ...) and parses
`server_version` as Redshift's (`8.0.2`). This relay drops those parameters and
rewrites that one reply, then passes bytes through untouched, so dbt can
compile the project for a `redshift` target against a real catalog: the queries
dbt runs while compiling (listing relations through information_schema) are
valid on both. Nothing here executes a model.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

SSL_REQUEST = 80877103
STARTUP_KEEP = {b"user", b"database", b"application_name", b"client_encoding", b"options"}
REDSHIFT_VERSION = b"8.0.2"


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


SASL = struct.pack("!I", 10)  # AuthenticationSASL


class RedshiftWire:
    """Listens on 127.0.0.1:`port`, relays to PostgreSQL at `upstream`."""

    def __init__(self, upstream: tuple[str, int], *, libpq: bool = False) -> None:
        self.upstream = upstream
        # libpq (psycopg2) reads the SASL mechanism list as PostgreSQL sends it;
        # redshift_connector needs the rewrite below.
        self.libpq = libpq
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            while True:
                length = struct.unpack("!I", _read(client, 4))[0]
                startup = _read(client, length - 4)
                if struct.unpack("!I", startup[:4])[0] != SSL_REQUEST:
                    break
                client.sendall(b"N")  # no TLS: ask again in plain text
            fields = startup[4:].split(b"\0")
            kept = [
                part
                for name, value in zip(fields[0::2], fields[1::2], strict=False)
                if name in STARTUP_KEEP
                for part in (name, value)
            ]
            payload = startup[:4] + b"\0".join(kept) + b"\0\0"
            upstream = socket.create_connection(self.upstream)
            upstream.sendall(struct.pack("!I", len(payload) + 4) + payload)
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            while True:  # the startup replies, up to the first ReadyForQuery
                kind = _read(upstream, 1)
                body = _read(upstream, struct.unpack("!I", _read(upstream, 4))[0] - 4)
                if kind == b"S" and body.startswith(b"server_version\0"):
                    body = b"server_version\0" + REDSHIFT_VERSION + b"\0"
                if kind == b"R" and body[:4] == SASL and not self.libpq:
                    # PostgreSQL ends the SASL mechanism list with an empty name;
                    # redshift_connector reads that as an unknown mechanism.
                    names = [name for name in body[4:].split(b"\0") if name]
                    body = SASL + b"\0".join(names) + b"\0"
                client.sendall(kind + struct.pack("!I", len(body) + 4) + body)
                if kind in (b"Z", b"E"):
                    break
            _pump(upstream, client)
        except (ConnectionError, OSError):
            client.close()
