"""URL normalisation, scope rules and the private-address guard — pure functions.

Why hand-written on top of ``urllib.parse`` rather than ``courlan.normalize_url``: courlan
(1.4, checked) keeps ``..``/``.`` path segments and fragments and accepts spaces in host
names, so two spellings of one page would become two frontier rows. We keep courlan's idea of
dropping tracking parameters, and follow RFC 3986 §6 (syntax-based normalisation) for the rest:

- scheme and host lower-cased, IDNA-encoded host, default port (80/443) dropped;
- dot segments removed, empty path becomes ``/``;
- percent-escapes upper-cased, escapes of unreserved characters decoded, unsafe bytes escaped;
- fragment dropped; tracking query parameters (``utm_*``, ``fbclid``, ``gclid``…) dropped;
  the order of the remaining parameters is kept (it can matter to the server).

``normalize_url`` returns ``None`` with a reason for anything that is not a fetchable http(s)
URL, so the caller can record why a link was ignored.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import SplitResult, quote, urljoin, urlsplit, urlunsplit

MAX_URL_LENGTH = 2048
_TRACKING = re.compile(r"^(utm_[a-z]+|fbclid|gclid|dclid|msclkid|mc_cid|mc_eid|_ga|yclid)$", re.I)
_HOST_OK = re.compile(r"^[a-z0-9.-]+$")
# Characters that may stay literal in a path / query (RFC 3986 pchar + "/" + "?" for queries).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
_UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f]")


class InvalidURL(ValueError):
    """A link that is not a fetchable http(s) URL; ``str(exc)`` is the recorded reason."""


def _normalize_escapes(part: str, safe: str) -> str:
    """Upper-case escapes, decode escaped unreserved characters, escape everything unsafe."""

    def fix(m: re.Match) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    part = _PCT.sub(fix, part)
    # quote() leaves existing %XX alone because '%' is in safe; stray '%' not followed by two
    # hex digits is escaped first so the result is always a valid URL.
    part = re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", part)
    return quote(part, safe=safe + "%")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4."""
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    result = "/".join(out)
    if not result.startswith("/"):
        result = "/" + result
    return result


def _normalize_host(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    if not host:
        raise InvalidURL("invalid_url:empty_host")
    if host.startswith("["):  # IPv6 literal
        try:
            ip = ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise InvalidURL("invalid_url:bad_ipv6_host") from None
        return f"[{ip.compressed}]"
    if not _HOST_OK.match(host):
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURL("invalid_url:bad_host") from None
        if not _HOST_OK.match(host):
            raise InvalidURL("invalid_url:bad_host")
    if ".." in host or host.startswith(".") or host.startswith("-"):
        raise InvalidURL("invalid_url:bad_host")
    return host


def normalize_url(url: str, base: str | None = None) -> str:
    """Absolute, canonical form of ``url`` (resolved against ``base``); raises ``InvalidURL``."""
    if not isinstance(url, str):
        raise InvalidURL("invalid_url:not_a_string")
    url = url.strip()
    if not url:
        raise InvalidURL("invalid_url:empty")
    if _CONTROL.search(url):  # a regex: the per-character any() was ~15% of this function
        # Browsers strip tab/newline inside URLs; anything else control-like is garbage.
        url = re.sub(r"[\t\n\r]", "", url)
        if _CONTROL.search(url):
            raise InvalidURL("invalid_url:control_characters")
    try:
        if base is not None:
            url = urljoin(base, url)
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid_url:{_slug(str(exc))}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidURL(f"unsupported_scheme:{scheme or 'none'}")
    if parts.hostname is None:
        raise InvalidURL("invalid_url:no_host")
    if parts.username is not None or parts.password is not None:
        raise InvalidURL("invalid_url:userinfo")
    host = _normalize_host(parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]")
    netloc = host
    if port is not None and not (scheme == "http" and port == 80) and not (
        scheme == "https" and port == 443
    ):
        netloc = f"{host}:{port}"
    path = _remove_dot_segments(_normalize_escapes(parts.path or "/", _PATH_SAFE))
    query = ""
    if parts.query:
        kept = [p for p in parts.query.split("&") if p and not _TRACKING.match(p.split("=", 1)[0])]
        query = "&".join(_normalize_escapes(p, _QUERY_SAFE) for p in kept)
    out = urlunsplit(SplitResult(scheme, netloc, path, query, ""))
    if len(out) > MAX_URL_LENGTH:
        raise InvalidURL("invalid_url:too_long")
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "unknown"


def host_of(url: str) -> str:
    """``host[:port]`` of a normalised URL — the politeness key (one queue per host:port)."""
    return urlsplit(url).netloc


def hostname_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


# --------------------------------------------------------------------------------------------
# scope


@dataclass(frozen=True)
class Scope:
    """Which URLs a crawl may fetch. Empty ``allowed_domains`` means "the seeds' hosts"
    (filled in by the crawler); a domain also admits its sub-domains."""

    allowed_domains: tuple[str, ...] = ()
    max_depth: int = 10
    include: tuple[str, ...] = ()  # regexes; if any, a URL must match one
    exclude: tuple[str, ...] = ()  # regexes; a URL matching one is out of scope
    _inc: tuple = field(default=(), init=False, repr=False, compare=False)
    _exc: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inc", tuple(re.compile(p) for p in self.include))
        object.__setattr__(self, "_exc", tuple(re.compile(p) for p in self.exclude))
        object.__setattr__(
            self, "allowed_domains", tuple(d.lower().strip(".") for d in self.allowed_domains)
        )

    def domain_ok(self, url: str) -> bool:
        host = hostname_of(url)
        return not self.allowed_domains or any(
            host == d or host.endswith("." + d) for d in self.allowed_domains)

    def check(self, url: str, depth: int) -> str | None:
        """``None`` if in scope, else the reason it is not."""
        if depth > self.max_depth:
            return "max_depth"
        host = hostname_of(url)
        if self.allowed_domains and not any(
            host == d or host.endswith("." + d) for d in self.allowed_domains
        ):
            return "domain_not_allowed"
        if self._exc and any(r.search(url) for r in self._exc):
            return "excluded_pattern"
        if self._inc and not any(r.search(url) for r in self._inc):
            return "not_included_pattern"
        return None


# --------------------------------------------------------------------------------------------
# private-address guard (SSRF protection): checked on the URL's host before a fetch *and* on
# every address the resolver returns at connect time (see fetcher.GuardedResolver), so a public
# name that resolves to 127.0.0.1, or a redirect to one, is refused too.


def is_private_ip(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return True  # unparseable: refuse rather than guess
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


def literal_ip(host: str) -> str | None:
    """The IP if ``host`` is an IP literal, else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None
