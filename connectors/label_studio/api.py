"""Label Studio's HTTP API as the bridge uses it: JSON over urllib, retries, and both kinds of tokens.

A token with two dots is a personal access token (a JWT refresh token, Label Studio 1.17 and later): it is
exchanged for an access token (``POST /api/token/refresh/``), sent as ``Authorization: Bearer …`` and
refreshed on 401. Any other token, or a JWT Label Studio does not accept as one, is a legacy token sent as
``Authorization: Token …``. Connection errors and 5xx answers are retried with exponential backoff; a 4xx is
a :class:`LabelStudioError` naming the endpoint and Label Studio's detail. The token never appears in logs
or errors.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from connectors.kafka.clients import redact
from selector.errors import SelectorError

log = logging.getLogger(__name__)


class LabelStudioError(SelectorError):
    """Label Studio refused a request (4xx): the endpoint, the status and Label Studio's own detail."""

    def __init__(self, method: str, endpoint: str, status: int | None, detail: str) -> None:
        self.method, self.endpoint, self.status, self.detail = method, endpoint, status, detail
        hint = ""
        if status == 401:
            hint = (
                "; check 'label_studio.token': a personal access token (Account & Settings), or a legacy "
                "token with legacy tokens enabled for the organization"
            )
        super().__init__(f"Label Studio answered {status} to {method} {endpoint}: {detail}{hint}")


class LabelStudioUnavailableError(LabelStudioError):
    """Label Studio did not answer, or answered 5xx, on every attempt."""

    def __init__(self, method: str, endpoint: str, url: str, attempts: int, cause: str) -> None:
        super().__init__(method, endpoint, None, cause)
        self.args = (
            f"Label Studio at {url} unavailable for {method} {endpoint} after {attempts} attempts "
            f"(last: {cause}); check 'label_studio.url' and the server",
        )


def _detail(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")[:500]
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("detail", "validation_errors") if body.get(k)]
        return "; ".join(parts)[:500] or str(body)[:500]
    return str(body)[:500]


class LabelStudioClient:
    """JSON over HTTP with retries (connection errors and 5xx, exponential backoff); connects on first use."""

    def __init__(
        self, url: str, token: str, *, timeout_s: float = 15.0, attempts: int = 5, sleep: Any = time.sleep
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._access: str | None = None
        self.mode: str | None = None
        """'pat' (personal access token) or 'legacy', decided on the first request"""
        self.timeout_s = timeout_s
        self.attempts = attempts
        self._sleep = sleep

    def secrets(self) -> list[str]:
        """The token and the current access token (to redact)."""
        return [s for s in (self._token, self._access) if s]

    def _authorize(self) -> None:
        if self._token.count(".") == 2:
            try:
                self._refresh()
                self.mode = "pat"
                return
            except LabelStudioError as exc:
                if exc.status not in (400, 401):
                    raise
                log.info(
                    "Label Studio refused the token as a personal access token; trying it as a legacy one"
                )
        self.mode = "legacy"

    def _refresh(self) -> None:
        answer = self._send(
            "POST", "/api/token/refresh/", {"refresh": self._token}, None, None, self.attempts
        )
        self._access = str(answer["access"])

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        retry: bool = True,
    ) -> Any:
        """The decoded answer to one request; ``retry=False`` for requests that must not run twice.

        Raises:
            LabelStudioError: a 4xx answer (after one token refresh on 401 with a personal access token).
            LabelStudioUnavailableError: no answer, or 5xx, on every attempt.
        """
        if self.mode is None:
            self._authorize()
        attempts = self.attempts if retry else 1
        try:
            return self._send(method, path, body, query, self._header(), attempts)
        except LabelStudioError as exc:
            if exc.status != 401 or self.mode != "pat":
                raise
        self._refresh()  # the access token expired (5 minutes by default)
        return self._send(method, path, body, query, self._header(), attempts)

    def _header(self) -> str:
        return f"Bearer {self._access}" if self.mode == "pat" else f"Token {self._token}"

    def _send(
        self, method: str, path: str, body: Any, query: dict[str, Any] | None, auth: str | None, attempts: int
    ) -> Any:
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = auth
        data = orjson.dumps(body) if body is not None else None
        delay = 0.5
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
                return orjson.loads(raw) if raw.strip() else None
            except urllib.error.HTTPError as exc:
                detail = redact(_detail(exc.read()), self.secrets())
                if exc.code < 500:
                    raise LabelStudioError(method, path, exc.code, detail) from exc
                cause = f"{exc.code}: {detail}"
            except (urllib.error.URLError, OSError, http.client.HTTPException, orjson.JSONDecodeError) as exc:
                cause = redact(str(exc), self.secrets())
            if attempt == attempts:
                raise LabelStudioUnavailableError(method, path, self.url, attempts, cause)
            log.warning("Label Studio %s %s failed (%s); retrying in %.1f s", method, path, cause, delay)
            self._sleep(delay)
            delay = min(delay * 2, 10.0)
        raise AssertionError("unreachable")
