"""StepCrawl: the data side of the toolkit.

Owns the polite resumable crawler (``stepcrawl.crawl``), extraction, language ID, quality
signals and tiers, URL/exact/MinHash near-dup removal, n-gram decontamination, cluster
annotation, the source adapters for code, commits, PR/issue threads, tool-use and reasoning
traces (``stepcrawl.sources``), the Document schema and stage manifests, the local executor
and the ``stepcrawl`` CLI. ``beam_pipelines`` runs the same stage functions on Beam.
"""

__version__ = "0.1.0"
