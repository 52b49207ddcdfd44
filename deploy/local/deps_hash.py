"""Print the sha256 of pyproject.toml's dependency list (the dependencies, the
service extras and the dev extras, sorted, one a line; the first 16 hex digits).

``make lock`` writes it into requirements.lock; deploy/local/venv.sh compares
it with pyproject.toml's, so a dependency changed in pyproject.toml without a
new lock is caught before anything is installed. Standard library only: it
runs before any environment exists."""

import hashlib
import sys
import tomllib
from pathlib import Path


def deps_hash(pyproject: Path) -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project["optional-dependencies"]
    deps = sorted(project["dependencies"]) + sorted(extras["service"]) + sorted(extras["dev"])
    return hashlib.sha256("\n".join(deps).encode()).hexdigest()[:16]


if __name__ == "__main__":
    print(deps_hash(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")))
