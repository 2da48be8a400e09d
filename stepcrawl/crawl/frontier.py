"""The frontier: every URL the crawl has seen, in SQLite, plus the in-memory scheduler.

Durability model (why a crawl survives SIGKILL at any instant):

- The database runs in WAL mode; each fetched page is *one* transaction (its row's new state,
  its WARC file/offset, and all its outlinks). A process kill loses at most the transaction in
  flight, never half of one.
- A page's row is committed right after its WARC record is written to the *open* WARC file
  (``.NAME.open``); the file is renamed to ``NAME`` only when complete (all its rows committed
  first). On resume, ``reset_unarchived`` puts back to ``queued`` every row whose WARC file is
  not a completed file on disk, and the leftover open file is deleted. So a page is either in a
  completed WARC *and* marked fetched, or it is queued again: nothing lost, nothing twice.
- URLs being fetched are not marked in the database at all ("in flight" is memory-only), so a
  kill leaves them ``queued``.
- Machine crash (power loss): per-page commits use ``synchronous=NORMAL`` (no fsync), so the
  last transactions may be lost — a suffix, never a middle one, so the frontier is still a
  consistent earlier state. The one dangerous case would be a *completed* WARC file whose rows
  were lost (its pages would be fetched again: duplicates), so the commit before each rename
  is a durable one (``commit(durable=True)``: a FULL-synchronous commit), the WARC file is
  fsynced before the rename and its directory after it.

The scheduler (``HostScheduler``) is the priority queue StepCrawl's idea needs: one heap per
host ordered by (−priority, insertion id), and a heap of *eligible* hosts (idle connection
slot, politeness delay elapsed) ordered by their best URL. Popping takes the globally best URL
among hosts that may be contacted now; ties break by insertion order, so a given seed list and
config always yields the same order (with concurrency 1; with more, completion order varies).

With a ``Spread`` (the crawler's default, ``--no-spread`` turns it off) each host's queue is
split further, one heap per ``(host, language edition, section)`` key (``editions.py``), and a
key's best URL ranks by

    (visited already, −value / (1 + taken)^strength, taken, −priority, id)

- *not yet visited first*: a key none of whose URLs has been handed out ranks above every
  visited one, so a budget-limited crawl fetches one page of every section and language
  edition it has discovered before a second page of any (Heritrix's queue rotation and
  BUbiNG's per-key queues give the same "each queue its turn");
- *value*: the head URL's priority, capped by the mean score of the key's fetched pages once
  there are any (``observe``) — a section whose pages score low (a shop, a link farm) stops
  drawing pages after its first, a good one keeps its share;
- */ (1 + taken)^strength*: each page taken from a key lowers its next one, so sections
  share the budget instead of the best one taking it all — with ``strength=1`` (default) in
  proportion to their value, like a stride / fair-share scheduler; ``0``: by value alone
  after the first visit; larger: closer to round-robin.

Ranks are a pure function of the queued items, the per-key counts and the per-key scores, and
those are rebuilt from the database on resume (``Frontier.started_urls``), so the order is
deterministic across a stop and ``--resume``.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from stepcrawl.crawl.editions import Spread

STATES = (
    "queued",        # waiting to be fetched (also: being fetched right now, in memory)
    "fetched",       # response stored in a WARC file
    "redirected",    # 3xx stored in a WARC file; target enqueued (column redirect_to)
    "failed",        # network error / timeout / 4xx / 5xx after retries (column reason)
    "disallowed",    # robots.txt forbids it; never requested
    "out_of_scope",  # domain / depth / include-exclude rules (column reason)
    "skipped",       # content type not kept, category budget spent, private address…
    "invalid",       # a link that is not a fetchable URL (column reason)
    "sitemap",       # a sitemap, read and its entries enqueued (not stored in WARC)
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS urls (
    id          INTEGER PRIMARY KEY,          -- insertion sequence: the tie-break
    url         TEXT NOT NULL UNIQUE,
    host        TEXT NOT NULL,
    state       TEXT NOT NULL,
    depth       INTEGER NOT NULL DEFAULT 0,
    priority    REAL NOT NULL DEFAULT 0,      -- inherited from the linking page's score
    score       REAL,                         -- this page's own score once fetched
    category    TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    redirects   INTEGER NOT NULL DEFAULT 0,   -- redirect hops that led here
    parent      INTEGER,
    reason      TEXT,
    status      INTEGER,
    content_type TEXT,
    n_bytes     INTEGER,
    redirect_to TEXT,
    warc_file   TEXT,
    warc_offset INTEGER,
    fetched_at  REAL,
    added_at    REAL
);
CREATE INDEX IF NOT EXISTS urls_state ON urls(state);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""


@dataclass(frozen=True, order=True)
class QueueItem:
    """A queued URL as the scheduler holds it; ordering = (−priority, id)."""

    neg_priority: float
    id: int
    url: str
    host: str
    depth: int
    category: str
    attempts: int
    redirects: int

    @property
    def priority(self) -> float:
        return -self.neg_priority


class Frontier:
    """SQLite-backed URL states. All writes go through here; ``commit()`` ends a transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level="DEFERRED")
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against process death (the kernel holds the WAL pages). A machine
        # crash can lose the last transactions — never a middle one — which is harmless for
        # pages in the open WARC file (re-queued anyway) and is ruled out for completed files
        # by ``commit(durable=True)`` before each rename (see the module doc).
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    # -- meta / counters ----------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def bump(self, name: str, n: int = 1) -> None:
        self.db.execute(
            "INSERT INTO counters(name, n) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n",
            (name, n),
        )

    # -- rows -----------------------------------------------------------------------------------
    def add(
        self,
        url: str,
        host: str,
        *,
        state: str = "queued",
        depth: int = 0,
        priority: float = 0.0,
        category: str = "unknown",
        parent: int | None = None,
        reason: str | None = None,
        redirects: int = 0,
    ) -> QueueItem | None:
        """Insert a URL if unseen. Returns the ``QueueItem`` when a *queued* row was created."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO urls(url, host, state, depth, priority, category, parent, "
            "reason, redirects, added_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (url, host, state, depth, priority, category, parent, reason, redirects, time.time()),
        )
        if cur.rowcount != 1 or state != "queued":
            return None
        return QueueItem(-priority, cur.lastrowid, url, host, depth, category, 0, redirects)

    def update(self, row_id: int, **fields) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE urls SET {cols} WHERE id=?", (*fields.values(), row_id))

    def commit(self, durable: bool = False) -> None:
        """End the transaction. ``durable=True`` also survives a machine crash (power loss):
        used before a WARC file is renamed to its final name (see the module doc)."""
        self.db.commit()
        if durable:
            # ``synchronous`` cannot change inside a transaction, so switch to FULL between
            # transactions and commit a small marker one: its fsync of the WAL also covers
            # every earlier frame (frames already checkpointed were synced by the
            # checkpoint). FULL on every page would cost an fsync per page — 0.5 to 4.5 ms on
            # the development machine's disk against ~0.02 ms (bench/crawl.py), with the
            # event loop blocked meanwhile; once per WARC file it is free.
            self.db.execute("PRAGMA synchronous=FULL")
            self.set_meta("durable_commit_at", repr(time.time()))
            self.db.commit()
            self.db.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self.db.commit()
        self.db.close()

    def queued(self) -> Iterator[QueueItem]:
        for row in self.db.execute(
            "SELECT id, url, host, depth, priority, category, attempts, redirects FROM urls "
            "WHERE state='queued' ORDER BY id"
        ):
            rid, url, host, depth, prio, cat, attempts, redirects = row
            yield QueueItem(-prio, rid, url, host, depth, cat or "unknown", attempts, redirects)

    def started_urls(self) -> Iterator[tuple[str, str, float | None]]:
        """``(url, host, score)`` of the URLs the scheduler has handed out at least once:
        every row that left ``queued`` (other than links recorded straight as
        ``out_of_scope``/``invalid``), plus queued rows waiting for a retry; ``score`` is set
        for fetched pages. The spread scheduler's per-queue counts and scores are rebuilt
        from these on resume, so a resumed crawl ranks its queues as the uninterrupted one
        would."""
        yield from self.db.execute(
            "SELECT url, host, CASE WHEN state='fetched' THEN score END FROM urls "
            "WHERE state NOT IN ('queued','out_of_scope','invalid') "
            "OR (state='queued' AND attempts>0) ORDER BY id")

    def count(self, state: str | None = None) -> int:
        if state is None:
            return self.db.execute("SELECT COUNT(*) FROM urls").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM urls WHERE state=?", (state,)).fetchone()[0]

    def counts_by(self, column: str, where: str = "1") -> dict[str, int]:
        assert column in ("state", "reason", "category", "content_type", "host", "status")
        rows = self.db.execute(
            f"SELECT {column}, COUNT(*) FROM urls WHERE {where} GROUP BY {column} "
            f"ORDER BY COUNT(*) DESC, {column}"
        )
        return {str(k): n for k, n in rows}

    def fetched_by_category(self) -> dict[str, int]:
        return self.counts_by("category", "state='fetched'")

    def reset_unarchived(self, completed: Iterable[str]) -> int:
        """Re-queue rows whose WARC file is not a completed file (see module doc)."""
        completed = set(completed)
        names = [r[0] for r in self.db.execute(
            "SELECT DISTINCT warc_file FROM urls WHERE warc_file IS NOT NULL")]
        n = 0
        for name in names:
            if name not in completed:
                cur = self.db.execute(
                    "UPDATE urls SET state='queued', warc_file=NULL, warc_offset=NULL, "
                    "reason='requeued:warc_incomplete', score=NULL, status=NULL, "
                    "redirect_to=NULL WHERE warc_file=?",
                    (name,),
                )
                n += cur.rowcount
        self.db.commit()
        return n


Rank = tuple  # what the scheduler orders URLs by (smaller = sooner); see the module doc


class PriorityQueue:
    """One host's queued URLs in pure priority order: rank ``(−priority, id)``."""

    def __init__(self) -> None:
        self._heap: list[QueueItem] = []

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def best(self) -> QueueItem:
        return self._heap[0]

    def rank(self) -> Rank:
        head = self._heap[0]
        return (head.neg_priority, head.id)

    def push(self, item: QueueItem) -> None:
        heapq.heappush(self._heap, item)

    def pop(self) -> QueueItem:
        return heapq.heappop(self._heap)


@dataclass
class SpreadStats:
    """Per spread key ``(host, language, section)``: URLs handed out, and the sum and count
    of the scores of its fetched pages. Shared by all hosts' ``SpreadQueue``s. Scores are
    summed as integers (millionths): a float sum depends on the order of the additions, and
    a resumed crawl adds them in another order than the crawl it continues."""

    taken: dict[tuple, int] = field(default_factory=dict)
    score_sum: dict[tuple, int] = field(default_factory=dict)
    scored: dict[tuple, int] = field(default_factory=dict)

    def add_score(self, key: tuple, score: float) -> None:
        self.score_sum[key] = self.score_sum.get(key, 0) + round(score * 1_000_000)
        self.scored[key] = self.scored.get(key, 0) + 1

    def value(self, key: tuple, priority: float) -> float:
        n = self.scored.get(key, 0)
        return priority if n == 0 else min(priority, self.score_sum[key] / n / 1_000_000)


class SpreadQueue:
    """One host's queued URLs split by spread key; the host's next URL is the head of the key
    with the best rank (module doc). The keys sit in a heap of ``(rank, key)`` entries; an
    entry is current while it equals the key's rank, which changes only when the key's head
    changes, a URL is handed out or given back, or a page of the key is scored — each of
    which pushes a fresh entry — so stale entries are skipped."""

    def __init__(self, host: str, spread: Spread, stats: SpreadStats) -> None:
        self.host = host
        self.spread = spread
        self.stats = stats
        self._heaps: dict[tuple, list[QueueItem]] = {}
        self._keys: list[tuple[Rank, tuple]] = []
        self._current: dict[tuple, Rank] = {}  # each non-empty key's rank, set by refresh()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def key(self, url: str) -> tuple:
        return (self.host, *self.spread.key(url))

    def _rank(self, key: tuple) -> Rank:
        head = self._heaps[key][0]
        taken = self.stats.taken.get(key, 0)
        value = self.stats.value(key, head.priority)
        return (taken > 0, -(value / (1 + taken) ** self.spread.strength), taken,
                head.neg_priority, head.id)

    def _top(self) -> tuple[Rank, tuple]:
        while True:
            rank, key = self._keys[0]
            if self._current.get(key) == rank:
                return rank, key
            heapq.heappop(self._keys)

    def refresh(self, key: tuple) -> None:
        """The rank of ``key`` may have changed (its head or its stats did): enter it anew.
        Every change goes through here, so ``_current`` is always up to date."""
        if self._heaps.get(key):
            rank = self._rank(key)
            self._current[key] = rank
            heapq.heappush(self._keys, (rank, key))
        else:
            self._current.pop(key, None)

    @property
    def best(self) -> QueueItem:
        return self._heaps[self._top()[1]][0]

    def rank(self) -> Rank:
        return self._top()[0]

    def push(self, item: QueueItem) -> None:
        key = self.key(item.url)
        heap = self._heaps.setdefault(key, [])
        new_head = not heap or item < heap[0]
        heapq.heappush(heap, item)
        if new_head:
            self.refresh(key)
        self._size += 1

    def pop(self) -> QueueItem:
        _, key = self._top()
        heapq.heappop(self._keys)
        heap = self._heaps[key]
        item = heapq.heappop(heap)
        self._size -= 1
        if item.attempts == 0:  # a retry was counted when it was first handed out
            self.stats.taken[key] = self.stats.taken.get(key, 0) + 1
        if not heap:
            del self._heaps[key]
        self.refresh(key)
        return item

    def give_back(self, item: QueueItem) -> None:
        """``item`` was handed out but not used (the crawler parked it for a category
        budget): it goes back without counting as taken."""
        key = self.key(item.url)
        if item.attempts == 0 and self.stats.taken.get(key, 0) > 0:
            self.stats.taken[key] -= 1
            self.refresh(key)
        self.push(item)


class HostScheduler:
    """Per-host priority queues with politeness (see module doc). Time is passed in, so the
    scheduler is a pure data structure that tests can drive with a fake clock. With
    ``spread`` each host's queue is a ``SpreadQueue`` (see the module doc); without, the pure
    priority order of ``PriorityQueue``."""

    def __init__(self, per_host_connections: int = 1, default_delay: float = 1.0,
                 spread: Spread | None = None):
        self.per_host_connections = per_host_connections
        self.default_delay = default_delay
        self.spread = spread
        # per spread key, over the whole crawl (restored on resume)
        self.stats = SpreadStats()
        self.queues: dict[str, PriorityQueue | SpreadQueue] = {}
        self.active: dict[str, int] = {}
        self.ready_at: dict[str, float] = {}
        self.delay: dict[str, float] = {}
        self._ready: list[tuple[Rank, str]] = []
        self._sleeping: list[tuple[float, str]] = []
        self._delayed: list[tuple[float, QueueItem]] = []
        self.size = 0  # queued items (not counting delayed retries)

    def __len__(self) -> int:
        return self.size + len(self._delayed)

    @property
    def taken(self) -> dict[tuple, int]:
        """URLs handed out per spread key ``(host, language, section)``."""
        return self.stats.taken

    def restore(self, started: Iterable[tuple[str, str, float | None]]) -> None:
        """Rebuild the per-key counts and scores from ``(url, host, score)`` of every URL
        already handed out (``Frontier.started_urls``, on ``--resume``); call before pushing
        the queued items."""
        if self.spread is None:
            return
        st = self.stats
        for url, host, score in started:
            key = (host, *self.spread.key(url))
            st.taken[key] = st.taken.get(key, 0) + 1
            if score is not None:
                st.add_score(key, score)

    def observe(self, item: QueueItem, score: float, now: float) -> None:
        """``item``'s page was fetched and scored ``score``: its key's value follows."""
        if self.spread is None:
            return
        key = (item.host, *self.spread.key(item.url))
        self.stats.add_score(key, score)
        q = self.queues.get(item.host)
        if isinstance(q, SpreadQueue) and q:
            q.refresh(key)
            self._consider(item.host, now)  # the host's best may have changed either way

    def _queue(self, host: str) -> PriorityQueue | SpreadQueue:
        q = self.queues.get(host)
        if q is None:
            q = (PriorityQueue() if self.spread is None
                 else SpreadQueue(host, self.spread, self.stats))
            self.queues[host] = q
        return q

    def set_delay(self, host: str, delay: float) -> None:
        self.delay[host] = delay

    def _eligible(self, host: str, now: float) -> bool:
        return (
            bool(self.queues.get(host))
            and self.active.get(host, 0) < self.per_host_connections
            and self.ready_at.get(host, 0.0) <= now
        )

    def _consider(self, host: str, now: float) -> None:
        q = self.queues.get(host)
        if not q or self.active.get(host, 0) >= self.per_host_connections:
            return
        at = self.ready_at.get(host, 0.0)
        if at <= now:
            heapq.heappush(self._ready, (q.rank(), host))
        else:
            heapq.heappush(self._sleeping, (at, host))

    def push(self, item: QueueItem, now: float, returned: bool = False) -> None:
        """Queue ``item``; ``returned=True`` when it was popped but not used (parked by the
        crawler's budget gate), so a spread queue does not count it as taken."""
        q = self._queue(item.host)
        was_best = q.rank() if q else None
        if returned and isinstance(q, SpreadQueue):
            q.give_back(item)
        else:
            q.push(item)
        self.size += 1
        if was_best is None or q.rank() < was_best:
            self._consider(item.host, now)

    def hold(self, host: str, until: float) -> None:
        """Contact ``host`` again no earlier than ``until`` (a server's ``Retry-After``)."""
        self.ready_at[host] = max(self.ready_at.get(host, 0.0), until)

    def push_later(self, item: QueueItem, at: float) -> None:
        heapq.heappush(self._delayed, (at, item))

    def _wake(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, item = heapq.heappop(self._delayed)
            self.push(item, now)
        while self._sleeping and self._sleeping[0][0] <= now:
            _, host = heapq.heappop(self._sleeping)
            if self._eligible(host, now):
                heapq.heappush(self._ready, (self.queues[host].rank(), host))

    def pop(self, now: float) -> QueueItem | None:
        """The best URL on a host that may be contacted now; marks the host busy."""
        self._wake(now)
        while self._ready:
            rank, host = heapq.heappop(self._ready)
            q = self.queues.get(host)
            if not q or q.rank() != rank:
                continue  # stale entry: a fresher one was pushed when the host changed
            if not self._eligible(host, now):
                self._consider(host, now)  # e.g. hold() moved it: park it until ready
                continue
            item = q.pop()
            self.size -= 1
            self.active[host] = self.active.get(host, 0) + 1
            self._consider(host, now)  # more connections allowed on this host?
            return item
        return None

    def release(self, host: str, now: float, requested: bool = True) -> None:
        """A fetch on ``host`` ended; the next request waits ``delay`` from *now*."""
        self.active[host] = max(0, self.active.get(host, 0) - 1)
        if requested:  # max(): a hold() set while the request ran outlasts the delay
            self.ready_at[host] = max(self.ready_at.get(host, 0.0),
                                      now + self.delay.get(host, self.default_delay))
        self._consider(host, now)

    def next_wakeup(self) -> float | None:
        times = []
        if self._sleeping:
            times.append(self._sleeping[0][0])
        if self._delayed:
            times.append(self._delayed[0][0])
        return min(times) if times else None
