"""The choice component's noise variance (model/choice_sweep.py): implicit ALS
fixes the pseudo-likelihood's sigma^2 at 1; the learner estimates it from the
residuals at each sweep and the covariances are served times it, while the
means (what is learned, what the mean strategy ranks by) do not change."""

from __future__ import annotations

import dataclasses

import numpy as np

from model.choice import ChoiceConfig, ChoiceModel
from model.choice_snapshot import (
    export_checkpoint,
    export_snapshot,
    import_checkpoint,
    import_snapshot,
)
from model.choice_sweep import residual_noise_var
from model.config import HPMFConfig
from model.online import OnlineHPMF
from streamer.event import WatchEvent
from streamer.reader.redis_record import GlobalRecord, with_choice
from streamer.service.model_update import SourcedEvent, update_users
from streamer.service.store.global_stats_record import (
    CHOICE_SNAPSHOT_FORMAT,
    _encode,
    decode_choice_snapshot,
    encode_choice_snapshot,
)


def _trained(flag: bool, n_events: int = 600, seed: int = 0) -> ChoiceModel:
    """Two taste groups: even users start videos a*, odd users b*."""
    rng = np.random.default_rng(seed)
    m = ChoiceModel(ChoiceConfig(n_factors=3, sweep_every=100, noise_from_residuals=flag))
    states: dict = {}
    for _ in range(n_events):
        u = f"u{rng.integers(40)}"
        v = f"{'a' if int(u[1:]) % 2 == 0 else 'b'}{rng.integers(10)}"
        states[u] = m.learn_event(u, v, states.get(u))
    return m


def _brute_force(m: ChoiceModel, users: list[str]) -> float:
    """sum_ij c_ij (p_ij - s_ij)^2 / (users x videos), one (user, video) at a time."""
    cfg = m.config
    hist: dict[str, list[int]] = {}
    for (u, row), _ in m._pairs.items():  # clock order: oldest first
        hist.setdefault(u, []).append(row)
    total = 0.0
    for u in users:
        y = m._users[u][0].copy()
        y[-1] = 1.0
        rows = hist[u][-cfg.history_size :]
        for j in range(m.n_videos):
            s = float(m.video_mean()[j] @ y)
            c, p = cfg.negative_weight, 0.0
            if j in rows:
                age = len(rows) - 1 - rows.index(j)
                c, p = c + cfg.positive_weight * cfg.user_forgetting**age, 1.0
            total += c * (p - s) ** 2
    return total / (len(users) * m.n_videos)


def test_the_estimate_is_the_weighted_mean_squared_residual() -> None:
    m = _trained(True)
    users = sorted(m._users)
    uindex = {u: k for k, u in enumerate(users)}
    owner, rows, ages = [], [], []
    per: dict[str, list[int]] = {}
    for (u, row), _ in m._pairs.items():
        per.setdefault(u, []).append(row)
    for u, rs in per.items():
        for k, r in enumerate(rs):
            owner.append(uindex[u])
            rows.append(r)
            ages.append(len(rs) - 1 - k)
    means = np.stack([m._users[u][0] for u in users])
    got = residual_noise_var(m, means, np.array(owner), np.array(rows), np.array(ages, float))
    assert abs(got - _brute_force(m, users)) < 1e-9 * max(1.0, got)


def test_sweeps_estimate_sigma2_and_leave_the_means_alone() -> None:
    on, off = _trained(True), _trained(False)
    assert off.noise_var == 1.0
    # 0/1 targets with most weight on the zeros: far below implicit ALS's 1
    assert 0.0 < on.noise_var < 0.5
    np.testing.assert_array_equal(on.video_mean(), off.video_mean())
    np.testing.assert_array_equal(on.video_cov(), off.video_cov())
    cov = on.video_cov()[0]
    np.testing.assert_allclose(on.served_cov(cov), on.noise_var * cov)
    np.testing.assert_array_equal(off.served_cov(cov), cov)


def test_snapshots_and_checkpoints_carry_sigma2_and_old_blobs_read_as_one() -> None:
    m = _trained(True)
    snap = export_snapshot(m)
    assert (
        import_snapshot(decode_choice_snapshot(encode_choice_snapshot(snap)), m.config).noise_var
        == m.noise_var
    )
    assert import_checkpoint(export_checkpoint(m), m.config).noise_var == m.noise_var
    # a blob written before the field existed
    old = {f.name: getattr(snap, f.name) for f in dataclasses.fields(snap) if f.name != "noise_var"}
    Old = dataclasses.make_dataclass("ChoiceSnapshot", list(old))
    blob = _encode(Old(**old), CHOICE_SNAPSHOT_FORMAT)
    assert decode_choice_snapshot(blob).noise_var == 1.0


def test_the_global_record_serves_the_scaled_covariances() -> None:
    m = _trained(True)
    v, z = m.n_videos, np.zeros
    rec = GlobalRecord(
        0, 1, 0, True, "identity", 1.0, 1.0, z(1), z((1, 1)),
        list(m.video_ids), z((v, 1)), z((v, 1, 1)), z((v, 1)), 0,
    )  # fmt: skip
    out = with_choice(rec, m)
    np.testing.assert_array_equal(out.choice_video_mean, m.video_mean())
    np.testing.assert_allclose(out.choice_video_cov, m.noise_var * m.video_cov())
    np.testing.assert_allclose(out.choice_prior_cov, m.noise_var * m.prior_state()[1])


def test_the_worker_writes_the_users_covariance_times_the_learners_sigma2() -> None:
    learner = _trained(True)
    worker = import_snapshot(
        decode_choice_snapshot(encode_choice_snapshot(export_snapshot(learner))), learner.config
    )
    events = [
        SourcedEvent(WatchEvent(f"e{o}", f"w{o % 3}", f"a{o % 5}", 2.0, 1000 + o), 0, o, 1000 + o)
        for o in range(9)
    ]
    model = OnlineHPMF(HPMFConfig(n_factors=2, seed=0))
    upd = update_users(model, events, {}, dedupe_window=16, now_ms=5000, choice=worker)
    assert upd.stats is not None and upd.stats.choice_cov is not None
    for k, uid in enumerate(upd.stats.user_ids):
        # the learner gets the posterior itself, the record the served covariance
        np.testing.assert_allclose(
            upd.records[uid].choice_cov, learner.noise_var * upd.stats.choice_cov[k]
        )
