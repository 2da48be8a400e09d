"""``python -m beam_pipelines.worker_requirements``: what a Beam *worker* must install.

The one ``stepcrawl`` distribution also carries the trainer, so its dependencies include
``torch==2.13.0`` (plus tensorboard/matplotlib for training reports). The Beam pipelines never
import torch: ``stepcrawl``, ``tokenizer`` and ``curricula`` do not, and spaCy's ``thinc``
imports it only if it happens to be installed (``tests/test_beam_pipelines.py`` runs the curate
pipeline with torch made unimportable). Letting pip resolve the wheel's dependencies on each
worker would download the PyPI torch wheel — on Linux the CUDA build with its ``nvidia-*``
wheels, gigabytes — at every worker start.

So this prints the project's own requirement list — read from ``pyproject.toml`` when run from
a source checkout (where the wheel is built), else from the installed distribution's metadata
— minus the packages no worker imports, for a worker image built as in docs/BEAM.md::

    python -m beam_pipelines.worker_requirements > worker-requirements.txt
    pip wheel --no-deps . -w dist          # dist/stepcrawl-0.1.0-py3-none-any.whl
    # Dockerfile: pip install -r worker-requirements.txt && pip install --no-deps dist/*.whl
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, requires
from typing import Sequence

DISTRIBUTION = "stepcrawl"
# torch, tensorboard: only the trainer (model/, trainer_bridge/) imports them; matplotlib: only
# the report plots of `stepcrawl stats` / `curricula plan`, imported lazily, never on a worker.
NOT_ON_WORKERS = frozenset({"torch", "tensorboard", "matplotlib"})


def _name(req: str) -> str:
    """The project name of a requirement string (``"torch==2.13.0"`` → ``"torch"``)."""
    from packaging.requirements import Requirement

    return Requirement(req).name.lower().replace("_", "-")


def project_requirements(pyproject: str | None = None, dist: str = DISTRIBUTION) -> list[str]:
    """``[project].dependencies`` of ``pyproject`` (default: the checkout's, next to this
    package) or, without a checkout, of the installed distribution (an editable install's
    metadata is as old as its last ``pip install -e .``, hence pyproject first)."""
    import tomllib
    from importlib.resources import files

    path = pyproject
    if path is None:
        candidate = files("beam_pipelines").joinpath("..", "pyproject.toml")
        path = str(candidate) if candidate.is_file() else None
    if path is not None:
        with open(path, "rb") as fh:
            return list(tomllib.load(fh)["project"]["dependencies"])
    try:
        return list(requires(dist) or [])
    except PackageNotFoundError as err:
        raise SystemExit(f"{dist} is not installed and no pyproject.toml was given") from err


def worker_requirements(reqs: Sequence[str] | None = None, exclude: frozenset[str] = NOT_ON_WORKERS) -> list[str]:
    """The runtime requirements (no extras) without the ``exclude`` projects."""
    reqs = project_requirements() if reqs is None else reqs
    out = []
    for r in reqs:
        if "extra ==" in r.replace('"', "").replace("'", ""):
            continue  # optional-dependency groups (dev, benchmarks) are not for workers
        if _name(r) in exclude:
            continue
        out.append(r)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m beam_pipelines.worker_requirements",
        description="Print the requirements a Beam worker image needs (stepcrawl's dependencies minus torch, tensorboard, matplotlib).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example (see docs/BEAM.md, 'Packaging the code for workers'):\n"
        "  python -m beam_pipelines.worker_requirements > worker-requirements.txt\n"
        "  pip wheel --no-deps . -w dist\n",
    )
    ap.add_argument("--pyproject", help="pyproject.toml to read (default: the checkout's, else the installed metadata)")
    args = ap.parse_args(argv)
    reqs = worker_requirements(project_requirements(args.pyproject))
    print(f"# Beam worker requirements of {DISTRIBUTION} ({', '.join(sorted(NOT_ON_WORKERS))} left out: no worker imports them)")
    for r in reqs:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
