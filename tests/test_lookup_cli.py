"""``hpmf lookup`` against the real local Redis, on hand-made records (no torch)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streamer.cli import main
from streamer.reader.redis_record import (
    GlobalRecord,
    UserRecord,
    encode_user_record,
    global_prefix,
    user_key,
    write_global_record,
)


def small_globals(version: int = 3) -> GlobalRecord:
    """Five videos, k=2 with biases, log1p: v0 is clearly the best for user 'fan'."""
    vm = np.array(
        [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.5, 0.5, 0.2], [0.0, -1.0, 0.0]]
    )
    vc = np.stack([np.eye(3) * s for s in (0.01, 0.01, 0.01, 0.01, 0.5)])
    return GlobalRecord(
        version=version,
        dim=3,
        n_factors=2,
        biases=True,
        transform="log1p",
        b0=2.0,
        sigma=0.5,
        prior_mean=np.zeros(3),
        prior_cov=np.diag([0.25, 0.25, 0.25]),
        video_ids=[f"v{j}" for j in range(5)],
        video_mean=vm,
        video_cov=vc,
        video_scale=np.sqrt(np.diagonal(vc, axis1=1, axis2=2)),
        updated_ms=1_700_000_000_000,
    )


def fan(gv: int = 3) -> UserRecord:
    return UserRecord(
        mean=np.array([1.0, 0.0, 0.25]),
        cov=np.eye(3) * 0.01,
        n_events=4,
        updated_ms=1_700_000_100_000,
        event_ms=1_700_000_090_000,
        global_version=gv,
        partition=1,
        offset=17,
        history=[("v3", 12.0, 4)],
    )


@pytest.fixture
def published(redis_store) -> list[str]:  # type: ignore[no-untyped-def]
    """Records written as the service writes them, on one Redis and on the
    cluster (where the global keys carry the hash tag {prefix})."""
    client, prefix = redis_store.client, redis_store.prefix
    write_global_record(
        client, global_prefix(prefix, redis_store.cluster), small_globals(), ttl_s=60
    )
    client.hset(user_key(prefix, "fan"), mapping=encode_user_record(fan()))
    return [
        "--prefix",
        prefix,
        "--redis-url",
        redis_store.url,
        *(["--redis-cluster"] if redis_store.cluster else []),
    ]


def test_json_output(published, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["lookup", "fan", "--k", "3", "--json", "--predict", "v0,zzz", *published]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "ok" and out["is_prior"] is False and out["n_events"] == 4
    assert (out["model_version"], out["user_version"], out["version_lag"]) == (3, 3, 0)
    assert out["watched"] == ["v3"]
    recs = out["recommendations"]
    assert [r["video_id"] for r in recs][0] == "v0" and "v3" not in [r["video_id"] for r in recs]
    assert len(recs) == 3 and all(r["std"] > 0 for r in recs)
    assert out["predictions"][0]["known"] and out["predictions"][0]["mean"] == pytest.approx(
        recs[0]["mean"]
    )
    assert out["predictions"][1] == {"video_id": "zzz", "known": False, "mean": None, "std": None}
    np.testing.assert_allclose(out["std"], [0.1, 0.1, 0.1], rtol=1e-6)


def test_human_output(published, capsys) -> None:  # type: ignore[no-untyped-def]
    assert (
        main(["lookup", "fan", "--k", "2", "--strategy", "thompson", "--seed", "5", *published])
        == 0
    )
    text = capsys.readouterr().out
    assert "user fan" in text and "from 4 events" in text and "v3" in text
    assert "top 2 of 5 videos by thompson, seed 5, predicted minutes:" in text
    assert "   1. v" in text and " ± " in text


def test_new_user_and_include_watched(published, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["lookup", "stranger", "--json", *published]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "new_user" and out["is_prior"] and len(out["recommendations"]) == 5
    assert main(["lookup", "fan", "--json", "--include-watched", *published]) == 0
    assert "v3" in [r["video_id"] for r in json.loads(capsys.readouterr().out)["recommendations"]]


def test_no_model_is_exit_1(redis_url, key_prefix, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["lookup", "fan", "--prefix", key_prefix, "--redis-url", redis_url]) == 1
    assert "NoGlobalsError" in capsys.readouterr().err


def test_help_runs_without_torch() -> None:
    code = (
        "import sys\n"
        "from streamer.cli import main\n"
        "try:\n"
        "    main(['lookup', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert "--strategy" in done.stdout and "thompson" in done.stdout
