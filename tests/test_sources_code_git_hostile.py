"""Code and git adapters on hard inputs: licence texts that wrap differently or hold two
licences, vendored trees in history, FIFOs / sockets / non-UTF-8 names in a tree, a folder the
enclosing checkout ignores, option injection through --rev, and commit-message pseudonymisation.
Every input is built in the test."""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from stepcrawl.cli import main as cli_main
from stepcrawl.io import read_documents
from stepcrawl.manifest import StageManifest
from stepcrawl.sources import code as code_mod
from stepcrawl.sources.code import is_vendored, license_from_text

COMMON = Path("/usr/share/common-licenses")  # Debian's base-files: the real licence texts

BSD3 = """Copyright (c) 2021, Example Authors
All rights reserved.

Redistribution and use in source and binary forms, with or without modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice, this list of conditions and the following disclaimer in the documentation and/or other materials provided with the distribution.

3. Neither the name of the copyright holder nor the names of its contributors may be used to endorse or promote products derived from this software without specific prior written permission.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.
"""

MIT_FULL = """MIT License

Copyright (c) 2024 Example Authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated documentation files (the "Software"), to deal in the Software without restriction, including without limitation the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

PY = "import os\n\n\ndef f(x):\n    return os.path.join(x, 'a')\n\n\ndef g(y):\n    return y * 2\n"


def wrap(text: str, width: int, indent: str = "") -> str:
    return "\n\n".join(textwrap.fill(p, width, subsequent_indent=indent) for p in text.split("\n\n"))


def common_license(name: str) -> str:
    p = COMMON / name
    if not p.is_file():
        pytest.skip(f"{p} not on this machine")
    return p.read_text()


def _write(root: Path, rel: str, data: str | bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.org", "GIT_COMMITTER_NAME": "Ada",
           "GIT_COMMITTER_EMAIL": "ada@example.org", "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+00:00",
           "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+00:00"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def _commit(repo: Path, files: dict[str, str], message: str) -> None:
    for rel, text in files.items():
        _write(repo, rel, text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", message)


# --------------------------------------------------------------------------- licences
@pytest.mark.parametrize("width, indent", [(10_000, ""), (79, ""), (50, "   "), (33, "    ")])
def test_bsd3_is_bsd3_however_it_wraps(width, indent, monkeypatch):
    text = wrap(BSD3, width, indent)
    assert license_from_text(text) == "BSD-3-Clause"
    monkeypatch.setattr(code_mod, "_classify", lambda t: [])  # the phrase fallback alone
    assert license_from_text(text) == "BSD-3-Clause"


def test_bsd2_stays_bsd2():
    two = BSD3.replace(BSD3[BSD3.index("3. Neither"):BSD3.index("THIS SOFTWARE")], "")
    assert license_from_text(wrap(two, 60)) == "BSD-2-Clause"


def test_dual_and_multiple_licences_as_spdx_expressions():
    mpl = common_license("MPL-2.0")
    dual = ("This project is dual-licensed: you may use it under the terms of either the Mozilla Public License 2.0 "
            "or the MIT licence, at your option.\n\n" + mpl + "\n\n----\n\n" + MIT_FULL)
    assert license_from_text(dual) == "MIT OR MPL-2.0"
    # both texts without any words of choice: both apply
    assert license_from_text(mpl + "\n\n" + MIT_FULL) == "MIT AND MPL-2.0"
    # a GPL text says "at your option" inside itself: that is not a choice between licences
    assert license_from_text(common_license("GPL-2") + "\n\n" + MIT_FULL) == "GPL-2.0 AND MIT"
    assert license_from_text(common_license("Apache-2.0")) == "Apache-2.0"
    assert license_from_text("Licensed under the Apache License,\n# Version 2.0 (the \"License\")") == "Apache-2.0"


def test_licence_files_in_a_tree(tmp_path):
    src = tmp_path / "p"
    _write(src, "LICENSE-MIT", MIT_FULL)
    _write(src, "LICENSE-APACHE", common_license("Apache-2.0"))
    _write(src, "a.py", PY)
    _write(src, "sub/COPYING", wrap(BSD3, 40))
    _write(src, "sub/b.py", PY.replace("2", "3"))
    out = tmp_path / "o"
    assert cli_main(["ingest", "code", str(src), "--out", str(out), "--no-progress"]) == 0
    lic = {d.meta["path"]: d.meta["license"] for d in read_documents(out)}
    assert lic == {"a.py": "Apache-2.0 OR MIT", "sub/b.py": "BSD-3-Clause"}  # Rust-style LICENSE-<ID> pair: a choice
    assert StageManifest.read(out).extra["licenses"] == {"": "Apache-2.0 OR MIT", "sub": "BSD-3-Clause"}


# --------------------------------------------------------------------------- vendored history
def test_vendored_rule():
    assert is_vendored("requests/packages/urllib3/poolmanager.py")
    assert is_vendored("src/pip/_vendor/six.py") and is_vendored("pip/_vendor/rich/console.py")
    assert is_vendored("botocore/vendored/requests/api.py") and is_vendored("web/node_modules/x/index.js")
    assert not is_vendored("requests/packages/__init__.py")  # the shim is the project's own code
    assert not is_vendored("packages/app/src/index.py")  # a monorepo's own packages
    assert not is_vendored("requests/api.py")


@pytest.fixture(scope="module")
def vendored_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("requests")
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, {"requests/api.py": PY, "requests/packages/__init__.py": "from . import urllib3\n"}, "Add the API")
    _commit(repo, {"requests/packages/urllib3/poolmanager.py": "class PoolManager:\n    pass\n" * 40}, "Vendor urllib3 1.26")
    _commit(repo, {"requests/api.py": PY.replace("* 2", "* 3"), "src/pip/_vendor/six.py": "PY3 = True\n" * 50},
            "Triple g and bump six")
    return repo


def test_vendored_sections_and_commits_in_history(vendored_repo, tmp_path):
    out = tmp_path / "c"
    assert cli_main(["ingest", "git", str(vendored_repo), "--out", str(out), "--no-progress", "--keep-rejected"]) == 0
    m = StageManifest.read(out)
    assert m.accounting.docs_in == 3 and m.accounting.drops == {"vendored": 1}  # "Vendor urllib3": only vendored files
    assert m.extra["vendored"]["sections"] == 2 and m.extra["vendored"]["commits_dropped"] == 1
    assert m.extra["vendored"]["chars"] > 2000
    docs = {d.text.split("\n\n", 1)[1].split("\n", 1)[0]: d for d in read_documents(out)}
    mixed = docs["Triple g and bump six"]
    assert "diff --git a/requests/api.py b/requests/api.py" in mixed.text and "+    return y * 3" in mixed.text
    assert "PY3 = True" not in mixed.text and "diff --git a/src/pip/_vendor" not in mixed.text
    assert mixed.text.endswith("[diffs of 1 vendored file omitted]\n") and mixed.meta["vendored_files"] == 1
    assert "requests/packages/__init__.py" in docs["Add the API"].text  # the shim is not vendored
    # the same rule in `ingest code`
    out2 = tmp_path / "code"
    assert cli_main(["ingest", "code", str(vendored_repo), "--out", str(out2), "--no-progress"]) == 0
    assert StageManifest.read(out2).accounting.drops["vendored"] == 2


# --------------------------------------------------------------------------- option injection
def test_rev_cannot_inject_git_options(vendored_repo, tmp_path, capsys):
    target = tmp_path / "pwned.txt"
    for bad in (f"--output={target}", f"HEAD --output={target}", f"HEAD..--output={target}", "-p"):
        rc = cli_main(["ingest", "git", str(vendored_repo), f"--rev={bad}", "--out", str(tmp_path / "o"), "--no-progress"])
        assert rc != 0 and not target.exists()
        assert "--rev" in capsys.readouterr().err
    out = tmp_path / "ok"
    assert cli_main(["ingest", "git", str(vendored_repo), "--rev=HEAD~1..HEAD", "--out", str(out), "--no-progress"]) == 0
    assert StageManifest.read(out).accounting.docs_in == 1
    assert cli_main(["ingest", "git", str(vendored_repo), "--rev=--all", "--out", str(out), "--no-progress"]) == 0
    assert StageManifest.read(out).accounting.docs_in == 3


# --------------------------------------------------------------------------- hostile trees
@pytest.mark.timeout(60)
@pytest.mark.parametrize("git_files", [False, True])
def test_fifo_socket_and_non_utf8_name_cost_only_themselves(tmp_path, git_files):
    src = tmp_path / "tree"
    _write(src, "ok.py", PY)
    os.mkfifo(src / "pipe.py")  # reading it would block forever
    os.mkfifo(src / "LICENSE")  # the licence scan must not block either
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "control.sock"))
    bad = os.fsencode(src) + b"/caf\xe9.py"
    with open(bad, "wb") as fh:
        fh.write(PY.encode())
    if git_files:
        _git(src, "init", "-q")
    out = tmp_path / "o"
    try:
        args = ["ingest", "code", str(src), "--out", str(out), "--no-progress", "--keep-rejected"]
        assert cli_main(args + ([] if git_files else ["--no-git-files"])) == 0
    finally:
        sock.close()
    m = StageManifest.read(out)
    assert [d.meta["path"] for d in read_documents(out)] == ["ok.py"]
    drops = m.accounting.drops
    assert drops["undecodable_name"] == 1 and m.extra["undecodable_names"] == ["caf\\xe9.py"]
    if git_files:  # git lists neither FIFOs nor sockets as untracked files
        assert "not_regular_file" not in drops
    else:
        assert drops["not_regular_file"] == 2 + 1  # two FIFOs, one socket
        assert m.accounting.docs_in == 5


def test_folder_ignored_by_the_enclosing_checkout_is_walked(tmp_path, capsys):
    top = tmp_path / "project"
    _write(top, ".gitignore", "data/\n")
    _write(top, "data/corpus/a.py", PY)
    _write(top, "data/corpus/b.py", PY.replace("2", "5"))
    _git(top, "init", "-q")
    out = tmp_path / "o"
    assert cli_main(["ingest", "code", str(top / "data" / "corpus"), "--out", str(out), "--no-progress"]) == 0
    m = StageManifest.read(out)
    assert m.accounting.docs_out == 2 and m.extra["file_listing"].startswith("walk: the folder is git-ignored")
    assert "git-ignored" in capsys.readouterr().err


# --------------------------------------------------------------------------- commit messages
def test_commit_message_pseudonymisation(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, {"a.py": PY}, "Fix loader (thanks @carol-x)\n\nReported-by: Bo Ray <bo@corp.example>\n"
            "Signed-off-by: Ada Lovelace <ada@example.org>\nCo-authored-by: Bo Ray <bo@corp.example>")
    out = tmp_path / "o"
    assert cli_main(["ingest", "git", str(repo), "--out", str(out), "--no-progress"]) == 0
    (doc,) = read_documents(out)
    assert ("Fix loader (thanks @user_0)\n\nReported-by: person_0 <person_0@example.com>\n"
            "Signed-off-by: person_1 <person_1@example.com>\nCo-authored-by: person_0 <person_0@example.com>\n") in doc.text
    assert "Ada" not in doc.text and "bo@corp" not in doc.text
    out2 = tmp_path / "o2"
    assert cli_main(["ingest", "git", str(repo), "--out", str(out2), "--no-progress", "--no-pseudonymize"]) == 0
    (doc,) = read_documents(out2)
    assert "Signed-off-by: Ada Lovelace <ada@example.org>" in doc.text and "@carol-x" in doc.text


def test_repository_config_cannot_run_programs(tmp_path):
    """A checkout is someone else's: its .git/config may name a core.fsmonitor hook, which
    plain `git status` / `git ls-files` would execute."""
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _commit(repo, {"a.py": PY}, "Add a")
    marker = tmp_path / "PWNED"
    _git(repo, "config", "core.fsmonitor", f"touch {marker}; false")
    subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True)
    assert marker.exists()  # the hook is real: plain git runs it
    marker.unlink()
    for kind in ("code", "git"):
        assert cli_main(["ingest", kind, str(repo), "--out", str(tmp_path / kind), "--no-progress", "--resume"]) == 0
        assert not marker.exists(), kind
