"""The crawl executor: composes frontier, robots cache, fetcher, scorer and WARC writer.

One asyncio task per in-flight URL, at most ``concurrency`` of them, at most
``per_host_connections`` per host, and a host is contacted again only ``delay`` seconds after
its previous request ended (``delay`` = max(--per-host-delay, robots Crawl-delay), capped by
``max_crawl_delay``). Everything that happens to a URL ends up as one row state + reason in the
frontier, so a crawl can always be explained (``stepcrawl stats OUT``) and resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from tqdm import tqdm

from stepcrawl.crawl.fetcher import (
    KEPT_TYPES,
    FetchResult,
    decoded_body,
    fetch,
    kept_types_from,
    make_session,
)
from stepcrawl.crawl.editions import Spread
from stepcrawl.crawl.frontier import Frontier, HostScheduler, QueueItem
from stepcrawl.crawl.links import parse_html
from stepcrawl.crawl.robots import ROBOTS_MAX_BYTES, RobotsCache, RobotsPolicy, policy_from_response
from stepcrawl.crawl.scorer import PageScorer, load_scorer, url_category
from stepcrawl.crawl.sitemaps import SitemapError, parse_sitemap
from stepcrawl.crawl.urls import (
    InvalidURL,
    Scope,
    host_of,
    hostname_of,
    is_private_ip,
    literal_ip,
    normalize_url,
)
from stepcrawl.crawl.warc import PageRecord, RotatingWarcWriter, completed_warcs

log = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}
# URLs this process has already put in the frontier (any state). Most outlinks are known
# (site navigation: 8.5k links, 1.8k distinct URLs on the sample site); the set skips their
# scope check, category regexes and INSERT OR IGNORE. Bounded; cleared when full.
KNOWN_CACHE_SIZE = 1_000_000
RETRY_AFTER_STATUSES = {429, 503}  # RFC 9110 §10.2.3 / RFC 6585 §4
SITEMAP = "sitemap"  # the category that marks a frontier row as a sitemap (see sitemaps.py)
SITEMAP_PRIORITY = 0.5  # URLs listed only in a sitemap: below seeds, above low-value pages


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date
    (RFC 9110 §10.2.3). ``None`` when absent or unreadable (the normal back-off applies)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)  # the RFC says digits; "1.5" is read leniently too
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds == float("inf"):  # nan / inf
        return None
    return max(0.0, seconds)


class CrawlError(RuntimeError):
    """A crawl that cannot start (bad config, existing output without --resume…)."""


@dataclass
class CrawlConfig:
    out: Path
    seeds: list[str] = field(default_factory=list)
    max_pages: int | None = None
    resume: bool = False
    allow_private: bool = False
    concurrency: int = 32
    per_host_connections: int = 1
    per_host_delay: float = 1.0
    max_crawl_delay: float = 30.0
    max_depth: int = 5
    allowed_domains: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_bytes: int = 5 * 1024 * 1024
    timeout: float = 20.0
    retries: int = 2
    backoff: float = 1.0
    max_retry_after: float = 300.0
    max_redirects: int = 5
    warc_max_bytes: int = 100 * 1024 * 1024
    warc_gzip_level: int = 6
    # MIME types kept (stored in WARC); others are recorded as skipped:content_type:X
    content_types: tuple[str, ...] = tuple(KEPT_TYPES)
    max_outlinks: int = 2000
    user_agent: str = "stepcrawl/0.1 (+https://github.com/stepcrawl/stepcrawl)"
    robots_agent: str = "stepcrawl"
    min_expand_score: float = 0.0
    category_budgets: dict[str, int] = field(default_factory=dict)
    scorer_model: str | None = None
    sitemaps: bool = True  # follow robots.txt Sitemap: lines
    # spread the crawl over (host, language edition, section) queues (frontier module doc);
    # False = the pure priority order
    spread: bool = True
    spread_strength: float = 1.0
    spread_depth: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.concurrency < 1 or self.per_host_connections < 1:
            raise CrawlError("--concurrency and per-host connections must be ≥ 1")
        if self.per_host_delay < 0 or self.timeout <= 0 or self.max_bytes <= 0:
            raise CrawlError("--per-host-delay must be ≥ 0, --timeout and --max-bytes > 0")
        try:
            self.kept_types = kept_types_from(self.content_types)
        except ValueError as exc:
            raise CrawlError(f"--content-types: {exc}") from None
        if not 1 <= self.warc_gzip_level <= 9:
            raise CrawlError(f"--warc-gzip-level must be 1..9, got {self.warc_gzip_level}")
        if self.max_retry_after < 0:
            raise CrawlError("--max-retry-after must be ≥ 0")
        try:
            Spread(self.spread_strength, self.spread_depth)
        except ValueError as exc:
            raise CrawlError(f"--spread-strength / --spread-depth: {exc}") from None

    def spread_policy(self) -> Spread | None:
        return Spread(self.spread_strength, self.spread_depth) if self.spread else None


@dataclass
class CrawlResult:
    out: Path
    warc_dir: Path
    warc_files: list[str]
    fetched: int
    elapsed_s: float
    summary: dict
    interrupted: bool = False


class Crawler:
    def __init__(self, cfg: CrawlConfig, scorer: PageScorer | None = None):
        self.cfg = cfg
        self.scorer = scorer if scorer is not None else load_scorer(cfg.scorer_model)
        self.out = cfg.out
        self.warc_dir = self.out / "warc"
        self.stopping = False
        self._dns: dict[str, str | None] = {}
        self._known: set[str] = set()
        self._wake: asyncio.Event | None = None
        self.errors = 0

    # -- setup ---------------------------------------------------------------------------------
    def _open(self) -> None:
        cfg = self.cfg
        db_path = self.out / "frontier.sqlite"
        exists = db_path.exists()
        if exists and not cfg.resume:
            raise CrawlError(f"{self.out} already holds a crawl (frontier.sqlite); pass --resume "
                             f"to continue it or choose another --out")
        if cfg.resume and not exists and not cfg.seeds:
            raise CrawlError(f"--resume: no frontier.sqlite in {self.out} and no seeds given")
        self.out.mkdir(parents=True, exist_ok=True)
        self.frontier = Frontier(db_path)
        if cfg.resume and exists:
            gone = RotatingWarcWriter.discard_open_files(self.warc_dir)
            requeued = self.frontier.reset_unarchived(completed_warcs(self.warc_dir))
            if gone or requeued:
                log.info("resume: discarded %d unfinished WARC file(s), re-queued %d page(s) "
                         "whose records were in them", len(gone), requeued)
        domains = tuple(cfg.allowed_domains)
        if not domains:
            stored = self.frontier.get_meta("seed_hosts")
            hosts = set(json.loads(stored)) if stored else set()
            for s in cfg.seeds:
                with contextlib.suppress(InvalidURL):
                    hosts.add(hostname_of(normalize_url(s)))
            domains = tuple(sorted(hosts))
            self.frontier.set_meta("seed_hosts", json.dumps(sorted(hosts)))
        self.scope = Scope(domains, cfg.max_depth, tuple(cfg.include), tuple(cfg.exclude))
        cfg_json = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
        self.frontier.set_meta("config", json.dumps(cfg_json, sort_keys=True))
        self.frontier.set_meta("started_at" if not exists else "resumed_at", str(time.time()))
        for raw in cfg.seeds:
            try:
                url = normalize_url(raw)
            except InvalidURL as exc:
                self.frontier.add(raw[:2048], "", state="invalid", reason=f"seed:{exc}")
                continue
            self.frontier.add(url, host_of(url), depth=0, priority=1.0,
                              category=url_category(url))
        self.frontier.commit()
        self.sched = HostScheduler(cfg.per_host_connections, cfg.per_host_delay,
                                   cfg.spread_policy())
        self.sched.restore(self.frontier.started_urls())  # resume: same queue ranks
        now = time.monotonic()
        for item in self.frontier.queued():
            self.sched.push(item, now)
        self.fetched = self.frontier.count("fetched")
        self.cat_fetched = Counter(self.frontier.fetched_by_category())
        self.cat_inflight: Counter = Counter()  # budget reserved by fetches in flight
        self._parked: dict[str, list[QueueItem]] = {}
        self.writer = RotatingWarcWriter(
            self.warc_dir, max_bytes=cfg.warc_max_bytes, gzip_level=cfg.warc_gzip_level,
            before_rotate=lambda: self.frontier.commit(durable=True))

    # -- checks --------------------------------------------------------------------------------
    def _budget_spent(self, category: str) -> bool:
        cap = self.cfg.category_budgets.get(category)
        return cap is not None and self.cat_fetched[category] >= cap

    def _budget_gate(self, item: QueueItem) -> str:
        """``go`` / ``skip`` (budget spent) / ``park`` (the rest of the budget is already in
        flight). Without parking, ``concurrency`` pages of one category could pass the check
        together and overshoot its budget; parked URLs go back to the scheduler when a fetch
        of their category ends (it may fail and free its share). Runs before the task's first
        ``await``, so check-and-reserve is atomic on the event loop. Budgets count the
        category a page *gets* once scored; a URL predicted as another category can still
        add one page over (documented in docs/CRAWLING.md)."""
        cap = self.cfg.category_budgets.get(item.category)
        if cap is None:
            return "go"
        if self.cat_fetched[item.category] >= cap:
            return "skip"
        if self.cat_fetched[item.category] + self.cat_inflight[item.category] >= cap:
            self._parked.setdefault(item.category, []).append(item)
            return "park"
        self.cat_inflight[item.category] += 1
        return "go"

    def _unreserve(self, item: QueueItem) -> None:
        if item.category not in self.cfg.category_budgets:
            return
        self.cat_inflight[item.category] -= 1
        now = time.monotonic()
        for parked in self._parked.pop(item.category, []):
            self.sched.push(parked, now, returned=True)

    async def _private_reason(self, url: str) -> str | None:
        if self.cfg.allow_private:
            return None
        host = hostname_of(url)
        if host not in self._dns:
            ip = literal_ip(host)
            if ip is not None:
                self._dns[host] = f"private_address:{ip}" if is_private_ip(ip) else None
            else:
                try:
                    infos = await asyncio.get_running_loop().getaddrinfo(host, None)
                    bad = sorted({i[4][0] for i in infos if is_private_ip(i[4][0])})
                    self._dns[host] = f"private_address:{bad[0]}" if bad else None
                except OSError:
                    self._dns[host] = "dns_error"
        return self._dns[host]

    async def _fetch_robots(self, robots_url: str) -> RobotsPolicy:
        url = robots_url
        for _ in range(5):  # RFC 9309 §2.3.1.2: follow at least five redirects
            res = await fetch(self.session, url, timeout=self.cfg.timeout,
                              max_bytes=ROBOTS_MAX_BYTES, read_all=True)
            self.frontier.bump("robots_fetches")
            if res.error is None and res.status and 300 <= res.status < 400 and res.location:
                try:
                    url = normalize_url(res.location, base=url)
                    continue
                except InvalidURL:
                    return policy_from_response(None, b"", "bad_redirect")
            return policy_from_response(res.status, decoded_body(res, ROBOTS_MAX_BYTES),
                                        res.error)
        return policy_from_response(None, b"", "too_many_redirects")

    # -- recording -------------------------------------------------------------------------------
    def _fail(self, item: QueueItem, state: str = "failed", **fields) -> None:
        """Record the end of a URL that yielded no page (``errors`` feeds the progress bar)."""
        self.frontier.update(item.id, state=state, **fields)
        self.errors += 1

    def _retry_or_fail(self, item: QueueItem, reason: str, status: int | None,
                       retry_after: float | None = None, final_state: str = "failed") -> None:
        """Retry with exponential back-off, or record the failure. A ``Retry-After`` (429/503)
        holds the whole *host* that long (the server asked us to slow down, not just for this
        URL) and the retry waits at least that; one longer than ``max_retry_after`` is not
        waited for: the URL fails now (the host is still held ``max_retry_after``)."""
        attempts = item.attempts + 1
        now = time.monotonic()
        if retry_after is not None:
            self.sched.hold(item.host, now + min(retry_after, self.cfg.max_retry_after))
            if retry_after > self.cfg.max_retry_after:
                self._fail(item, attempts=attempts, status=status,
                           reason=f"{reason}:retry_after_too_long:{retry_after:.0f}s",
                           fetched_at=time.time())
                return
        if attempts <= self.cfg.retries:
            wait = self.cfg.backoff * 2 ** (attempts - 1)
            note = f"retry:{reason}"
            if retry_after is not None:
                wait = max(wait, retry_after)
                note += f":retry_after={retry_after:g}s"
            self.frontier.update(item.id, attempts=attempts, reason=note, status=status)
            again = QueueItem(item.neg_priority, item.id, item.url, item.host, item.depth,
                              item.category, attempts, item.redirects)
            self.sched.push_later(again, now + wait)
        else:
            self._fail(item, state=final_state, attempts=attempts, reason=reason,
                       status=status, fetched_at=time.time())

    def _first_sight(self, url: str) -> bool:
        """True the first time this process meets ``url`` (see KNOWN_CACHE_SIZE)."""
        if url in self._known:
            return False
        if len(self._known) >= KNOWN_CACHE_SIZE:
            self._known.clear()  # only a cache: frontier.add is idempotent without it
        self._known.add(url)
        return True

    def _enqueue_link(self, raw: str, base: str, parent: QueueItem, priority: float,
                      category: str) -> None:
        if not raw.strip() or raw.strip().startswith("#"):
            self.frontier.bump("links_ignored:same_page")  # href="" / "#frag": this page
            return
        try:
            url = normalize_url(raw, base=base)
        except InvalidURL as exc:
            reason = str(exc)
            if reason.startswith("unsupported_scheme"):
                self.frontier.bump(f"links_ignored:{reason}")
            else:
                # the raw link text is the key: it may not even survive urljoin
                self.frontier.add(raw.strip()[:2048], "", state="invalid", reason=reason,
                                  depth=parent.depth + 1, parent=parent.id)
            return
        if not self._first_sight(url):
            return
        depth = parent.depth + 1
        why = self.scope.check(url, depth)
        if why is not None:
            self.frontier.add(url, host_of(url), state="out_of_scope", reason=why, depth=depth,
                              parent=parent.id)
            return
        guess = url_category(url)
        item = self.frontier.add(url, host_of(url), depth=depth, priority=priority,
                                 category=guess if guess != "unknown" else category,
                                 parent=parent.id)
        if item is not None:
            self.sched.push(item, time.monotonic())

    def _record_redirect(self, item: QueueItem, res: FetchResult) -> None:
        try:
            target = normalize_url(res.location or "", base=item.url)
        except InvalidURL as exc:
            self._fail(item, reason=f"bad_redirect:{exc}",
                       status=res.status, fetched_at=time.time())
            return
        name, offset = self.writer.write(self._page_record(item, res, {"redirect_to": target}))
        reason = f"redirect:{res.status}"
        if item.redirects + 1 > self.cfg.max_redirects:
            reason += ":too_many_redirects"
        else:
            why = self.scope.check(target, item.depth)
            if why is not None:
                self.frontier.add(target, host_of(target), state="out_of_scope", reason=why,
                                  depth=item.depth, parent=item.id)
                reason += f":target_out_of_scope:{why}"
            else:
                new = self.frontier.add(target, host_of(target), depth=item.depth,
                                        priority=item.priority, category=item.category,
                                        parent=item.id, redirects=item.redirects + 1)
                if new is None:
                    reason += ":target_seen"  # loops end here: A→B→A finds A already known
                else:
                    self.sched.push(new, time.monotonic())
        self.frontier.update(item.id, state="redirected", status=res.status, reason=reason,
                             redirect_to=target, warc_file=name, warc_offset=offset,
                             attempts=item.attempts + 1, fetched_at=time.time(),
                             content_type=res.mime or None, n_bytes=len(res.body))

    def _add_sitemap(self, url: str, depth: int, parent: int | None) -> None:
        if not self._first_sight(url):
            return
        if not self.scope.domain_ok(url):  # include/exclude patterns are for pages
            self.frontier.add(url, host_of(url), state="out_of_scope",
                              reason="domain_not_allowed", depth=depth, parent=parent,
                              category=SITEMAP)
            return
        new = self.frontier.add(url, host_of(url), depth=depth, priority=1.0,
                                category=SITEMAP, parent=parent)
        if new is not None:
            self.sched.push(new, time.monotonic())

    def _enqueue_sitemaps(self, origin: str, policy: RobotsPolicy) -> None:
        """robots.txt ``Sitemap:`` lines of ``origin`` go to the frontier (once per origin)."""
        for raw in policy.parser.sitemaps:
            try:
                url = normalize_url(raw, base=origin + "/")
            except InvalidURL:
                self.frontier.bump("sitemaps_ignored:invalid_url")
                continue
            self._add_sitemap(url, 0, None)
        self.frontier.commit()

    def _record_sitemap(self, item: QueueItem, res: FetchResult) -> None:
        try:
            sm = parse_sitemap(decoded_body(res, self.cfg.max_bytes), self.cfg.max_bytes)
        except SitemapError as exc:
            self._fail(item, status=res.status, reason=str(exc),
                       content_type=res.mime or None, attempts=item.attempts + 1,
                       fetched_at=time.time())
            return
        for loc in sm.locs:
            if sm.is_index:
                try:
                    self._add_sitemap(normalize_url(loc, base=item.url), item.depth, item.id)
                except InvalidURL:
                    self.frontier.bump("sitemaps_ignored:invalid_url")
            else:  # listed pages are depth 1 from the sitemap, whatever the site's link depth
                self._enqueue_link(loc, item.url, item, SITEMAP_PRIORITY, "unknown")
        reason = f"sitemap:{'index' if sm.is_index else 'urls'}={len(sm.locs)}"
        if sm.truncated or res.truncated:
            reason += ":truncated"
        self.frontier.update(item.id, state="sitemap", status=res.status, reason=reason,
                             content_type=res.mime or None, n_bytes=len(res.body),
                             attempts=item.attempts + 1, fetched_at=time.time())

    def _page_record(self, item: QueueItem, res: FetchResult, meta: dict) -> PageRecord:
        return PageRecord(
            url=item.url, status=res.status or 0, reason=res.reason_phrase,
            response_headers=res.headers, request_headers=res.request_headers,
            body=res.body, ip=res.ip, truncated=res.truncated,
            metadata={k: str(v) for k, v in meta.items()},
        )

    def _record_page(self, item: QueueItem, res: FetchResult) -> None:
        notes: list[str] = ["truncated"] if res.truncated else []
        links: list[str] = []
        base = item.url
        if res.kind == "html":
            parsed = parse_html(decoded_body(res, 4 * self.cfg.max_bytes),
                                res.header("Content-Type"))
            notes += parsed.notes
            score_document = getattr(self.scorer, "score_document", None)
            if score_document is not None:  # reuse the tree: one parse per page
                score, category = score_document(item.url, parsed.doc)
            else:
                score, category = self.scorer.score(item.url, parsed.html)
            parsed.doc = None  # the scorer may have modified it; free it now
            links = parsed.links
            if parsed.base:
                with contextlib.suppress(ValueError):
                    base = urljoin(item.url, parsed.base)
            canonical = None
            if parsed.canonical:
                # recorded in the WARC metadata (curation can fold the page into its
                # canonical) and followed like a link when it names another URL
                with contextlib.suppress(InvalidURL):
                    canonical = normalize_url(parsed.canonical, base=base)
                if canonical is not None and canonical != item.url:
                    links = [parsed.canonical, *links]
        else:  # pdf / epub: not parsed here; they keep the priority their linker gave them
            score = item.priority
            category = item.category if item.category != "unknown" else res.kind
            canonical = None
        meta = {"score": score, "category": category, "depth": item.depth,
                "priority": item.priority, "kind": res.kind}
        if canonical is not None:
            meta["canonical"] = canonical
        name, offset = self.writer.write(self._page_record(item, res, meta))
        self.fetched += 1
        self.cat_fetched[category] += 1
        self.sched.observe(item, score, time.monotonic())  # its section's value (spread)
        if res.kind == "html" and links:
            if score < self.cfg.min_expand_score:
                notes.append("not_expanded:low_score")
            elif self._budget_spent(category):
                notes.append(f"not_expanded:category_budget:{category}")
            else:
                if len(links) > self.cfg.max_outlinks:
                    notes.append(f"outlinks_capped:{len(links)}")
                    links = links[: self.cfg.max_outlinks]
                for raw in links:
                    self._enqueue_link(raw, base, item, score, category)
        self.frontier.update(
            item.id, state="fetched", status=res.status, content_type=res.mime,
            n_bytes=len(res.body), score=score, category=category, warc_file=name,
            warc_offset=offset, attempts=item.attempts + 1, fetched_at=time.time(),
            reason=";".join(notes) or None,
        )

    def _record(self, item: QueueItem, res: FetchResult) -> None:
        if res.error is not None:
            if res.error in ("private_address", "decompressed_too_large"):  # retrying cannot help
                self._fail(item, reason=res.error, status=res.status, attempts=item.attempts + 1)
            else:
                self._retry_or_fail(item, res.error, None)
        elif res.status in RETRY_STATUSES:
            retry_after = (parse_retry_after(res.header("Retry-After"))
                           if res.status in RETRY_AFTER_STATUSES else None)
            self._retry_or_fail(item, f"http_{res.status}", res.status, retry_after)
        elif 300 <= res.status < 400:
            if not res.location:
                self._fail(item, status=res.status, reason="redirect_without_location")
            else:
                self._record_redirect(item, res)
        elif res.status >= 400 or res.status < 200:
            self._fail(item, status=res.status,
                       reason=f"http_{res.status}", attempts=item.attempts + 1,
                       fetched_at=time.time())
        elif item.category == SITEMAP:
            self._record_sitemap(item, res)
        elif res.kind is None:
            self.frontier.update(item.id, state="skipped", status=res.status,
                                 content_type=res.mime or None,
                                 reason=f"content_type:{res.mime or 'missing'}",
                                 attempts=item.attempts + 1, fetched_at=time.time())
        else:
            self._record_page(item, res)
        self.frontier.commit()

    # -- one URL ----------------------------------------------------------------------------------
    async def _handle(self, item: QueueItem) -> bool:
        """Process one URL; returns whether a request went to its host (politeness)."""
        why = await self._private_reason(item.url)
        if why is not None:
            self._fail(item, reason=why)
            self.frontier.commit()
            return False
        parts = urlsplit(item.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        requested = False
        policy = self.robots.cached(origin)
        if policy is None:
            policy = await self.robots.get(origin)
            requested = True
        agent = self.cfg.robots_agent
        delay = max(self.cfg.per_host_delay, policy.crawl_delay(agent) or 0.0)
        delay = min(delay, max(self.cfg.max_crawl_delay, self.cfg.per_host_delay))
        self.sched.set_delay(item.host, delay)
        if not policy.allowed(item.url, agent):
            if policy.transient:  # robots.txt unreachable: ask again later, then give up
                self._retry_or_fail(item, f"robots_{policy.source}", None,
                                    final_state="disallowed")
                self.frontier.commit()
                return requested
            reason = "robots_txt" if policy.source == "fetched" else f"robots_{policy.source}"
            self.frontier.update(item.id, state="disallowed", reason=reason)
            self.frontier.commit()
            return requested
        if requested and self.cfg.sitemaps and policy.parser is not None:
            self._enqueue_sitemaps(origin, policy)
        if requested and delay > 0:
            await asyncio.sleep(delay)  # the robots.txt request counts for politeness too
        res = await fetch(self.session, item.url, timeout=self.cfg.timeout,
                          max_bytes=self.cfg.max_bytes, kept_types=self.cfg.kept_types,
                          read_all=item.category == SITEMAP)
        self._record(item, res)
        return True

    async def _task(self, item: QueueItem) -> None:
        gate = self._budget_gate(item)
        if gate != "go":
            if gate == "skip":
                self.frontier.update(item.id, state="skipped",
                                     reason=f"category_budget:{item.category}")
                self.frontier.commit()
            # parked: stays 'queued' in the database (a kill loses nothing)
            self.sched.release(item.host, time.monotonic(), requested=False)
            self._inflight.discard(asyncio.current_task())
            self._wake.set()
            return
        requested = True
        try:
            requested = await self._handle(item)
        except Exception as exc:  # a bug must not stop the crawl: record it and go on
            log.exception("internal error on %s", item.url)
            self._fail(item, reason=f"internal_error:{type(exc).__name__}")
            self.frontier.commit()
        finally:
            self._unreserve(item)  # before leaving in-flight: parked URLs are queued again
            self.sched.release(item.host, time.monotonic(), requested)
            # leave the in-flight set *before* waking the loop, or it could see this task
            # still in flight, find nothing to do and sleep forever
            self._inflight.discard(asyncio.current_task())
            self._wake.set()

    # -- main loop ------------------------------------------------------------------------------
    def _room(self, inflight: int) -> bool:
        return self.cfg.max_pages is None or self.fetched + inflight < self.cfg.max_pages

    async def run(self) -> CrawlResult:
        start = time.monotonic()
        self._open()
        self._wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop)
        cfg = self.cfg
        self.session = make_session(cfg.concurrency, cfg.per_host_connections,
                                    cfg.allow_private, cfg.user_agent)
        # an unreachable robots.txt is asked again at most once per back-off period
        self.robots = RobotsCache(self._fetch_robots, error_ttl=cfg.backoff)
        bar = tqdm(total=cfg.max_pages, initial=min(self.fetched, cfg.max_pages or self.fetched),
                   unit="page", desc="crawl", disable=not cfg.progress, dynamic_ncols=True)
        self._inflight = inflight = set()
        shown = self.fetched
        try:
            while not self.stopping:
                now = time.monotonic()
                while len(inflight) < cfg.concurrency and self._room(len(inflight)):
                    item = self.sched.pop(now)
                    if item is None:
                        break
                    task = asyncio.create_task(self._task(item))
                    inflight.add(task)
                if self.fetched != shown:
                    bar.update(self.fetched - shown)
                    shown = self.fetched
                    bar.set_postfix(queue=len(self.sched), errors=self.errors,
                                    inflight=len(inflight), refresh=False)
                if not inflight and (len(self.sched) == 0 or not self._room(0)):
                    break
                wake = self.sched.next_wakeup()
                timeout = None if wake is None else max(0.0, wake - time.monotonic())
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            if inflight:
                await asyncio.gather(*list(inflight), return_exceptions=True)
        finally:
            bar.update(self.fetched - shown)
            bar.close()
            await self.session.close()
            self.writer.close()
            self.frontier.set_meta("finished_at", str(time.time()))
            self.frontier.commit()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
        elapsed = time.monotonic() - start
        from stepcrawl.crawl.report import summary_dict, write_summary

        summary = summary_dict(self.frontier, self.out, elapsed)
        write_summary(self.out, summary)
        self.frontier.close()
        return CrawlResult(self.out, self.warc_dir, completed_warcs(self.warc_dir),
                           self.fetched, elapsed, summary, interrupted=self.stopping)

    def _stop(self) -> None:
        if not self.stopping:
            log.warning("stopping: finishing in-flight fetches (kill again to abort; "
                        "--resume continues)")
        self.stopping = True
        if self._wake is not None:
            self._wake.set()


def run_crawl(cfg: CrawlConfig, scorer: PageScorer | None = None) -> CrawlResult:
    """Synchronous entry point (CLI, tests, Beam-free scripts)."""
    return asyncio.run(Crawler(cfg, scorer).run())


__all__ = ["CrawlConfig", "CrawlError", "CrawlResult", "Crawler", "run_crawl"]
