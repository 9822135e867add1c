"""The Kubernetes lock backend's HTTP: JSON in, JSON out, on the official client's own
connection pool and credentials.

Why not the generated ``CustomObjectsApi``
------------------------------------------
A lock handoff is a handful of small requests and watch events, and on the bench's
2 shared cores the Python client's CPU per request was what a handoff cost beyond the
API server's (docs/benchmarks.md, kube-locks). The generated client spends most of it
on its generic machinery: every call checks its keyword arguments, sanitises path,
query, header and body recursively for serialisation, turns them into tuples,
re-decodes the response and runs it through its deserialiser, for requests whose
body is a dict we built and whose answer is JSON we read as a dict anyway. Here a
request is a path, a query, ``json.dumps`` and ``json.loads``.

Why still the official client's configuration
---------------------------------------------
Authentication and TLS stay exactly what the kubeconfig says, because they are the
official client's: the urllib3 pool is the ``ApiClient``'s own (built from the
kubeconfig's CA, client certificate and key, ``verify_ssl``, TLS server name, proxy),
and the authorization header is asked of its ``Configuration`` on every request, as
the generated client does (``auth_settings()``, which calls the refresh hook that
exec and OIDC credentials install, so an expiring token is renewed as before). The
default headers (the User-Agent) and a configured cookie go along too.

Errors are the client's ``ApiException`` with the decoded body, so what the backend
sorts into conflicts, refusals and transient failures is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes.client.exceptions import ApiException

JSON = dict[str, Any]


class KubeHTTP:
    """JSON requests and streaming GETs to one API server through an ``ApiClient``'s
    pool and credentials (see the module docstring)."""

    def __init__(self, api: Any) -> None:
        self._configuration = api.configuration
        self._pool: urllib3.PoolManager = api.rest_client.pool_manager
        self._base = str(api.configuration.host).rstrip("/")
        headers = dict(api.default_headers)
        if api.cookie:
            headers["Cookie"] = api.cookie
        self._headers = headers

    def _prepared(self, path: str, query: Mapping[str, object] | None,
                  content_type: str | None) -> tuple[str, dict[str, str]]:
        headers = dict(self._headers, Accept="application/json")
        if content_type is not None:
            headers["Content-Type"] = content_type
        pairs = [(key, _query_value(value)) for key, value in (query or {}).items()]
        # Asked on every request: the refresh hook of exec/OIDC credentials runs here.
        for setting in self._configuration.auth_settings().values():
            if not setting.get("value"):
                continue
            if setting["in"] == "header":
                headers[setting["key"]] = setting["value"]
            elif setting["in"] == "query":
                pairs.append((setting["key"], setting["value"]))
            elif setting["in"] == "cookie":
                headers["Cookie"] = setting["value"]
        url = self._base + path
        if pairs:
            url += "?" + urlencode(pairs)
        return url, headers

    def request(self, method: str, path: str, *, timeout: float,
                query: Mapping[str, object] | None = None, body: object = None,
                content_type: str = "application/json") -> JSON:
        """One request; its JSON answer, or ``ApiException`` for a status >= 400. urllib3's
        errors (unreachable, timed out, cut) pass through: the caller retries."""
        url, headers = self._prepared(path, query, content_type if body is not None else None)
        encoded = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        response = self._pool.request(method, url, body=encoded, headers=headers,
                                      timeout=urllib3.Timeout(total=timeout), retries=False,
                                      redirect=False)
        if response.status >= 400:
            raise _api_exception(response)
        answer: JSON = json.loads(response.data)
        return answer

    def stream(self, path: str, *, query: Mapping[str, object], connect_timeout: float,
               read_timeout: float) -> Any:
        """A GET whose body is read as it arrives (a watch): the urllib3 response, whose
        ``connection`` may be shut down to end it."""
        url, headers = self._prepared(path, query, None)
        response = self._pool.request(
            "GET", url, headers=headers, preload_content=False, retries=False, redirect=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout))
        if response.status >= 400:
            try:
                raise _api_exception(response)
            finally:
                response.release_conn()
        return response

    def close(self) -> None:
        self._pool.clear()


def path_segment(value: str) -> str:
    """A name as one path segment (object names are already safe; this keeps them so)."""
    return quote(value, safe="")


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _api_exception(response: Any) -> ApiException:
    error = ApiException(status=response.status, reason=response.reason)
    error.body = response.data.decode("utf-8", errors="replace")
    error.headers = response.headers
    return error


__all__ = ["KubeHTTP", "path_segment"]
