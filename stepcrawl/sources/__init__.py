"""Source adapters: code trees, git histories, GitHub issue/PR threads, PR-Dialogue, agent
tool-use trajectories and reasoning traces → Documents with the same schema as web data.

Each adapter is a generator ``iter_*(inputs, config, stats) -> Document | Drop | BadRecord``;
``stepcrawl.sources.common.write_stage`` writes any such stream as a stage folder
(``part-*.parquet`` + ``_manifest.json``). The CLI is ``stepcrawl ingest <kind>``
(``stepcrawl/commands/ingest.py``); docs/SOURCES.md documents layouts, rules and masks.
"""

DEFAULT_SOURCES = {
    "code": "code",
    "git": "commits",
    "issues": "issues",
    "pr-dialogue": "pr_dialogue",
    "tool-use": "tool_use",
    "reasoning": "reasoning",
}
