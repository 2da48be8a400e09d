"""robots.txt: parsing with protego, the RFC 9309 status-code rules, and a per-host cache.

RFC 9309 §2.3.1: a 4xx robots.txt means "no rules" (allow all); a 5xx or a network failure
means "assume complete disallow" until it can be fetched — so such a policy is cached only
briefly and the crawler retries the host's URLs (with back-off) before recording them as
``disallowed``. protego parses leniently, so a
malformed file yields whatever rules could be read (and no exception): the crawl goes on.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from protego import Protego

ROBOTS_TTL_S = 24 * 3600.0
ROBOTS_MAX_BYTES = 500 * 1024  # RFC 9309 §2.5: parse at least 500 KiB


@dataclass
class RobotsPolicy:
    """The rules for one host; ``source`` says where they came from (for the frontier)."""

    parser: Protego | None
    allow_all: bool = False
    disallow_all: bool = False
    source: str = "fetched"  # fetched | http_4xx | http_5xx | error:<reason>
    fetched_at: float = 0.0

    @property
    def transient(self) -> bool:
        """Disallow-all because robots.txt was *unreachable* (5xx, network error): worth
        asking again later, unlike rules that were read."""
        return self.source.startswith(("http_5", "error:"))

    def allowed(self, url: str, user_agent: str) -> bool:
        if self.allow_all:
            return True
        if self.disallow_all or self.parser is None:
            return False
        return bool(self.parser.can_fetch(url, user_agent))

    def crawl_delay(self, user_agent: str) -> float | None:
        if self.parser is None:
            return None
        delay = self.parser.crawl_delay(user_agent)
        return float(delay) if delay is not None else None


def policy_from_response(status: int | None, body: bytes, error: str | None = None) -> RobotsPolicy:
    """Pure: turn a robots.txt fetch outcome into a policy."""
    now = time.time()
    if error is not None or status is None:
        return RobotsPolicy(None, disallow_all=True, source=f"error:{error}", fetched_at=now)
    if 400 <= status < 500:
        return RobotsPolicy(None, allow_all=True, source=f"http_{status}", fetched_at=now)
    if status >= 500:
        return RobotsPolicy(None, disallow_all=True, source=f"http_{status}", fetched_at=now)
    text = body[:ROBOTS_MAX_BYTES].decode("utf-8", errors="replace")
    try:
        parser = Protego.parse(text)
    except Exception as exc:  # protego is lenient; this is a last-resort guard
        return RobotsPolicy(None, allow_all=True, source=f"unparseable:{type(exc).__name__}",
                            fetched_at=now)
    return RobotsPolicy(parser, source="fetched", fetched_at=now)


class RobotsCache:
    """One policy per ``scheme://host:port``, fetched once (concurrent callers wait on one
    fetch) and kept for ``ttl`` seconds — a *transient* one (robots.txt unreachable) only
    ``error_ttl`` seconds, so that the crawler's retries of the host's URLs ask again."""

    def __init__(self, fetch: Callable[[str], Awaitable[RobotsPolicy]], ttl: float = ROBOTS_TTL_S,
                 error_ttl: float = 60.0):
        self._fetch = fetch
        self._ttl = ttl
        self._error_ttl = error_ttl
        self._policies: dict[str, RobotsPolicy] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetches = 0

    def cached(self, origin: str) -> RobotsPolicy | None:
        policy = self._policies.get(origin)
        ttl = self._error_ttl if policy is not None and policy.transient else self._ttl
        if policy is not None and time.time() - policy.fetched_at < ttl:
            return policy
        return None

    async def get(self, origin: str) -> RobotsPolicy:
        policy = self.cached(origin)
        if policy is not None:
            return policy
        lock = self._locks.setdefault(origin, asyncio.Lock())
        async with lock:
            policy = self.cached(origin)
            if policy is None:
                self.fetches += 1
                policy = await self._fetch(origin + "/robots.txt")
                self._policies[origin] = policy
            return policy
