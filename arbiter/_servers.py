"""Connections to the cluster's servers as the topology account, with short timeouts.

The session itself is the provider's (``components.mysql._replication_sql.Session``, which
imports no pulumi); what is the arbiter's own is the connect: a connect and read timeout
bounded by the check period, so a frozen server counts as a failed check instead of
hanging the leader.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pymysql
import pymysql.cursors

from arbiter._config import Address, Config
from components.mysql._replication_sql import Session as SqlSession


class ServerError(RuntimeError):
    """A server refused or did not answer; the message names it and the statement."""


class Session(SqlSession):
    error = ServerError


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
