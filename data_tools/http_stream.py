"""An HTTP(S) download as a readable stream that survives transient faults and never hangs.

`HttpStream` reads one URL front to back with the standard library (urllib: redirects, https, the usual proxy
variables; loopback hosts bypass proxies). What can go wrong, and what it does:

* HTTP 404 / 403 / 401 / 410: permanent, `ShardReadError` at once (no retry);
* HTTP 5xx, 408, 429, a refused or reset connection: transient, retried up to ``retries`` times, waiting
  ``backoff`` seconds before the first retry and twice as long before each further one;
* a stall (no byte for ``timeout`` seconds, while connecting or reading): the socket times out, retried the same way;
* a connection cut before ``Content-Length`` bytes arrived: reconnect and ask for the rest (``Range``; a server
  that ignores it sends everything again and the bytes already read are passed over), retried the same way.

The retry count resets whenever the stream gets further than it got before the last failure, so a long download
over a flaky link is not given up on, while one that fails at the same byte again and again is.
"""

from __future__ import annotations

import http.client
import io
import time
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import ProxyHandler, Request, build_opener, urlopen

PERMANENT = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 410: "Gone"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ReadOptions:
    """How remote shards are read: ``timeout`` seconds without a byte make a stall, ``retries`` further attempts after
    a transient failure, ``backoff`` seconds before the first retry (doubling)."""

    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ValueError(f"need timeout > 0, retries >= 0 and backoff >= 0, got {self}")


DEFAULT_READ = ReadOptions()


class ShardReadError(OSError):
    """A shard (or manifest) that cannot be read; the message names it and says why."""

    def __init__(self, location: str, reason: str, missing: bool = False) -> None:
        super().__init__(f"{location}: {reason}")
        self.location, self.reason, self.missing = location, reason, missing


def _open_url(request: Request, timeout: float) -> Any:
    host = urlsplit(request.full_url).hostname or ""
    if host in LOOPBACK:  # a proxy from the environment must not receive loopback requests
        return build_opener(ProxyHandler({})).open(request, timeout=timeout)
    return urlopen(request, timeout=timeout)  # noqa: S310 (http/https only: checked by the caller)


class HttpStream(io.RawIOBase):
    """A raw, read-only stream of one HTTP(S) URL (wrap it in `io.BufferedReader`); see the module doc."""

    def __init__(self, url: str, options: ReadOptions = DEFAULT_READ) -> None:
        super().__init__()
        self.url, self.options = url, options
        self._pos, self._length = 0, None
        self._failures, self._failed_at = 0, -1
        self._response: Any = None
        self._connect()

    def readable(self) -> bool:
        return True

    def _connect(self) -> None:
        """Open the URL at the current position, retrying transient failures."""
        while True:
            headers = {"Range": f"bytes={self._pos}-"} if self._pos else {}
            try:
                response = _open_url(Request(self.url, headers=headers), self.options.timeout)
            except HTTPError as err:
                err.close()
                if err.code in PERMANENT:
                    raise ShardReadError(self.url, f"HTTP {err.code} ({PERMANENT[err.code]})",
                                         missing=err.code in (404, 410)) from None
                self._failed(f"HTTP {err.code} ({err.reason})")
                continue
            except (URLError, TimeoutError, ConnectionError, http.client.HTTPException) as err:
                self._failed(_describe(err, self.options.timeout))
                continue
            break
        if self._pos and response.status != 206:  # the server ignored Range: pass over what was read already
            skip = self._pos
            while skip:
                chunk = response.read(min(skip, 1 << 20))
                if not chunk:
                    response.close()
                    self._failed(f"the connection closed before byte {self._pos} was reached again")
                    return self._connect()
                skip -= len(chunk)
        if self._length is None:
            length = response.headers.get("Content-Length")
            self._length = int(length) if length is not None and response.status == 200 else None
        self._response = response

    def _failed(self, reason: str) -> None:
        """Count a transient failure at the current position: wait (backoff) or give up with `ShardReadError`."""
        if self._pos > self._failed_at:
            self._failures, self._failed_at = 0, self._pos
        self._failures += 1
        if self._failures > self.options.retries:
            tries = self.options.retries + 1
            raise ShardReadError(self.url, f"{reason} ({tries} attempt{'s' * (tries > 1)}, {self._pos} bytes read)")
        time.sleep(self.options.backoff * 2 ** (self._failures - 1))

    def _drop(self) -> None:
        if self._response is not None:
            try:
                self._response.close()
            except OSError:
                pass
            self._response = None

    def readinto(self, buffer: Any) -> int:
        while True:
            if self._response is None:
                self._connect()
            try:
                n = self._response.readinto(buffer)
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as err:
                self._drop()
                self._failed(_describe(err, self.options.timeout))
                continue
            if n == 0 and self._length is not None and self._pos < self._length:
                self._drop()
                self._failed(f"the connection closed after {self._pos} of {self._length} bytes")
                continue
            self._pos += n
            return n

    def close(self) -> None:
        self._drop()
        super().close()


def _describe(err: BaseException, timeout: float) -> str:
    reason = getattr(err, "reason", err)
    if isinstance(err, TimeoutError) or isinstance(reason, TimeoutError):
        return f"stalled (no data for {timeout:g} s)"
    if isinstance(err, http.client.IncompleteRead):
        return "the connection closed early"
    return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
