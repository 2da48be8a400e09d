"""Input readers, one module per archive family: ``warc`` (WARC 1.0/1.1, per-record or
whole-stream gzip, resynchronising after damage), ``arc`` (the older ARC format, through
warcio), ``content`` (HTTP transfer/content codings undone under a size cap)."""
