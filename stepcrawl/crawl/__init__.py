"""StepCrawl's crawler: a polite, resumable asyncio crawler whose frontier is a priority queue.

Modules (small, composable):

- ``urls``      URL normalisation, scope rules and the private-address guard (pure functions).
- ``robots``    robots.txt cache over protego.
- ``frontier``  the SQLite frontier (state of every URL; survives SIGKILL) and the in-memory
                per-host priority scheduler.
- ``scorer``    ``PageScorer`` interface, the default heuristic scorer and ``FastTextScorer``.
- ``sitemaps``  the ``<loc>`` entries of a sitemap / sitemap index (defensive lxml parse).
- ``fetcher``   one HTTP fetch with aiohttp (size cap, content-type allow list, timeouts).
- ``warc``      the rotating, atomically renamed gzip WARC writer (warcio).
- ``crawler``   ``CrawlConfig`` and the executor that composes the above.
- ``report``    ``crawl_summary(crawl_dir)`` — the summary reprinted from the frontier.
- ``sample_server`` the bundled sample site server (``stepcrawl serve-sample``).
"""

from stepcrawl.crawl.crawler import CrawlConfig, CrawlResult, run_crawl  # noqa: F401
from stepcrawl.crawl.report import crawl_summary  # noqa: F401
