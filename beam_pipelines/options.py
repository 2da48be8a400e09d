"""Pipeline options for stepcrawl's Beam pipelines.

Every pipeline accepts the standard Beam options unchanged (``--runner``, ``--temp_location``,
``--num_workers``, ``--requirements_file``, ``--setup_file``, ``--extra_package``,
``--direct_num_workers``, ``--direct_running_mode``, ``--project``, ``--region``, …) because
the option classes below are plain ``PipelineOptions`` subclasses: Beam parses and validates
its own flags and ours side by side, and unknown flags are passed through to the runner.

One deliberate difference from Beam's defaults: when ``--runner`` is not given we pick the
``DirectRunner`` explicitly. Recent Beam versions may default to the PrismRunner, which
downloads a binary at run time; stepcrawl must run offline.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipelines.components import DEFAULT_MAX_ROUNDS

DEFAULT_RUNNER = "DirectRunner"


class StepcrawlOptions(PipelineOptions):
    """The flags of all stepcrawl pipelines, in one class.

    One class rather than one per pipeline because Beam registers every ``PipelineOptions``
    subclass in one global argparse parser: two classes declaring ``--input`` conflict, and a
    ``required=True`` flag of one pipeline would be demanded by the others. Each pipeline
    checks the flags it needs with :func:`require`. A flag is declared here only when a
    pipeline reads it (curate's own flags live in ``curate._curate_args``).
    """

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        g = parser.add_argument_group("stepcrawl")
        g.add_argument("--input", default=None, help="curate: WARC file, folder or glob (local, gs://, s3://, hdfs://); tokenize: corpus folder of one source")
        g.add_argument("--output", default=None, help="output folder (curate: part-*.parquet + _manifest.json; tokenize: TOKENS/<source>; build_mix: MIX/)")
        g.add_argument(
            "--cc_max_rounds",
            type=int,
            default=DEFAULT_MAX_ROUNDS,
            help="curate: Large-Star/Small-Star rounds unrolled into the graph for near-dup clusters "
            "(the pipeline fails, naming this flag, if they did not converge)",
        )
        g.add_argument("--keep_rejected", action="store_true", default=False, help="curate: also write dropped documents to OUTPUT/rejected/ with their reason")
        g.add_argument("--num_shards", type=int, default=0, help="curate: output Parquet files (0: the runner decides)")
        g.add_argument("--tokenizer", default=None, help="tokenize: sentencepiece model file")
        g.add_argument("--curriculum", default=None, help="build_mix: curriculum YAML")
        g.add_argument("--stage", default=None, help="build_mix: stage to materialise")
        g.add_argument("--tokens", default=None, help="build_mix: TOKENS/ root (one folder per source)")
        g.add_argument("--seed", type=int, default=None, help="build_mix: mixing seed (default: the curriculum's)")


def require(opts: "StepcrawlOptions", *names: str) -> None:
    missing = [f"--{n}" for n in names if getattr(opts, n) in (None, "")]
    if missing:
        raise SystemExit(f"error: missing required option(s): {', '.join(missing)}")


def make_options(argv: Sequence[str] | None, *required: str) -> tuple[PipelineOptions, StepcrawlOptions]:
    """Parse ``argv`` (default: sys.argv) into Beam options, defaulting the runner to the
    DirectRunner, and check the stepcrawl flags in ``required``."""
    opts = PipelineOptions(list(argv) if argv is not None else None)
    std = opts.view_as(StandardOptions)
    if not std.runner:
        std.runner = DEFAULT_RUNNER
    ours = opts.view_as(StepcrawlOptions)
    require(ours, *required)
    return opts, ours


def run_pipeline(opts: PipelineOptions, build: Callable[[beam.Pipeline], Any], wait: bool = True):
    """The common tail of every pipeline's ``run()``: a ``beam.Pipeline`` on ``opts``, its
    graph added by ``build(p)``, run (and, with ``wait``, waited for); returns the
    ``PipelineResult`` so callers can read metrics."""
    p = beam.Pipeline(options=opts)
    build(p)
    result = p.run()
    if wait:
        result.wait_until_finish()
    return result
