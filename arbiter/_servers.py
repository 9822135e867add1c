"""Connections to the cluster's servers as the topology account, with short timeouts.

Why not the provider's sessions (``components.mysql.replication``): that module is the
Pulumi dynamic provider and imports pulumi. This is the same small shape (one labelled
connection, errors that name the server and statement) with the arbiter's needs: a
connect and read timeout bounded by the check period, so a frozen server counts as a
failed check instead of hanging the leader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pymysql
import pymysql.cursors

from arbiter._config import Address, Config
from components.mysql._replication_sql import Statement


class ServerError(RuntimeError):
    """A server refused or did not answer; the message names it and the statement."""


class Session:
    def __init__(self, label: str, connection: pymysql.connections.Connection[Any]) -> None:
        self.label = label
        self.connection = connection

    def run(self, statement: Statement) -> list[dict[str, Any]]:
        try:
            with self.connection.cursor(pymysql.cursors.DictCursor) as cursor:
                cursor.execute(statement.sql, statement.args or None)
                return list(cursor.fetchall())
        except pymysql.MySQLError as error:
            raise ServerError(f"{self.label}: {statement.display()} failed: {error}") from None

    def one(self, statement: Statement) -> dict[str, Any] | None:
        rows = self.run(statement)
        return rows[0] if rows else None


@contextlib.contextmanager
def connect(label: str, address: Address, user: str, password: str, *,
            timeout: float, read_timeout: float | None = None) -> Iterator[Session]:
    # pymysql hands both to socket.settimeout, so fractions of a second work.
    seconds = read_timeout if read_timeout is not None else timeout
    try:
        connection = pymysql.connect(host=address.host, port=address.port, user=user,
                                     password=password, connect_timeout=max(timeout, 0.1),
                                     read_timeout=seconds, write_timeout=seconds,
                                     autocommit=True)
    except pymysql.MySQLError as error:
        raise ServerError(f"{label}: cannot connect as {user!r}: {error}") from None
    try:
        yield Session(label, connection)
    finally:
        with contextlib.suppress(Exception):
            connection.close()


class Servers:
    """The switchover engine's :class:`~components.mysql._switchover.Servers`, by ordinal."""

    def __init__(self, config: Config, *, timeout: float) -> None:
        self.config = config
        self.timeout = timeout

    def session(self, ordinal: int, *, read_timeout: int = 60
                ) -> contextlib.AbstractContextManager[Session]:
        return connect(self.label(ordinal), self.config.servers[ordinal],
                       self.config.topology_user, self.config.topology_password,
                       timeout=self.timeout, read_timeout=read_timeout)

    def quick(self, ordinal: int, *, timeout: float | None = None
              ) -> contextlib.AbstractContextManager[Session]:
        """A session whose every wait is bounded by the check timeout (or ``timeout``)."""
        return connect(self.label(ordinal), self.config.servers[ordinal],
                       self.config.topology_user, self.config.topology_password,
                       timeout=timeout if timeout is not None else self.timeout)

    def label(self, ordinal: int) -> str:
        return self.config.label(ordinal)
