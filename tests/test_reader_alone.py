"""``streamer.reader`` installed alone: a fresh virtual environment with the
project (``pip install --no-deps``) and only numpy and redis (linked from the
environment running the tests, so no network is needed), without torch, Pyro,
kafka-python or pydantic. The reader imports there and serves a user from the
real local Redis.

The package metadata is checked too: the base install (``hpmf-streamer`` or
``hpmf-streamer[reader]``) requires numpy and redis only; the service's
dependencies are the ``[service]`` extra."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _link_dist(site: Path, name: str) -> None:
    """Link an installed distribution (its packages and its metadata) into ``site``."""
    import importlib.metadata as md

    dist = md.distribution(name)
    top = {Path(str(f)).parts[0] for f in dist.files or []}
    base = Path(str(dist.locate_file("")))
    for entry in top:
        if entry.endswith(".pth") or entry == "..":
            continue
        src = base / entry
        if src.exists() and not (site / entry).exists():
            (site / entry).symlink_to(src)


def test_reader_installs_and_serves_without_torch(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("model", "streamer"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    for name in ("numpy", "redis"):
        _link_dist(site, name)
    # The wheel is built here (setuptools is in this environment) and only
    # installed there.
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        [*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-w", str(wheels), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("hpmf_streamer-*.whl")
    subprocess.run(
        [*pip, "--python", str(py), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    code = textwrap.dedent(
        f"""
        import importlib.metadata as md
        import importlib.util
        import sys

        # What the environment lacks: the service's dependencies.
        for name in ("torch", "pyro", "kafka", "pydantic", "prometheus_client"):
            assert importlib.util.find_spec(name) is None, name
        # The base install requires the reader's two dependencies only.
        base = [r for r in md.requires("hpmf-streamer") if "extra ==" not in r]
        assert sorted(r.split(">")[0].split("=")[0].strip() for r in base) == ["numpy", "redis"], base

        import numpy as np
        import redis

        from streamer.reader.lookup import Lookup, Status
        from streamer.reader.redis_record import (
            GlobalRecord, UserRecord, queue_user_record, write_global_record,
        )

        client = redis.Redis.from_url({redis_url!r})
        prefix = {key_prefix!r}
        d, v = 3, 4
        write_global_record(client, prefix, GlobalRecord(
            version=1, dim=d, n_factors=2, biases=True, transform="identity", b0=3.0,
            sigma=0.5, prior_mean=np.zeros(d), prior_cov=np.eye(d),
            video_ids=[f"v{{j}}" for j in range(v)],
            video_mean=np.arange(v * d, dtype=float).reshape(v, d) / 10,
            video_cov=np.tile(np.eye(d) * 0.01, (v, 1, 1)), video_scale=np.full((v, d), 0.1),
            updated_ms=1,
        ), ttl_s=60)
        pipe = client.pipeline(transaction=True)
        queue_user_record(pipe, prefix, "u1", UserRecord(
            np.array([1.0, 0.5, 0.2]), np.eye(d) * 0.1, 2, 5, 4, 1, 0, 9, [("v0", 2.0, 1)],
        ), ttl_s=60)
        pipe.execute()
        lookup = Lookup(client, prefix)
        post = lookup.user_posterior("u1")
        assert post.status is Status.OK, post
        assert lookup.user_posterior("nobody").status is Status.NEW_USER
        recs = lookup.recommend("u1", k=2)
        assert len(recs.video_ids) == 2 and set(recs.video_ids) <= set(["v1", "v2", "v3"]), recs
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "pyro", "kafka", "pydantic")]
        assert not bad, bad
        print("reader ok")
        """
    )
    done = subprocess.run(
        [str(py), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reader ok" in done.stdout
    # The environment running this test has the service's dependencies.
    assert importlib.util.find_spec("torch") is not None
