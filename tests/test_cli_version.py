"""``hpmf --version`` prints the package version (pyproject.toml's), with the git commit in a checkout."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from test_stream_support import ROOT


def test_version_prints_the_package_version_and_commit() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    line = done.stdout.strip()
    assert re.fullmatch(rf"hpmf {re.escape(expected)}( \(git [0-9a-f]{{4,}}(-dirty)?\))?", line), (
        line
    )
    if (ROOT / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        assert f"(git {head}" in line
