"""The learner's globals as a snapshot for workers and readers, and back.

:func:`export_globals` gives what every worker and reader needs, as numpy
(:class:`model.globals_snapshot.GlobalsSnapshot`); :func:`import_globals`
makes a model compute local steps and predictions against one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from model.globals_snapshot import GlobalsSnapshot
from model.hpmf_model import Hypers

if TYPE_CHECKING:
    from model.online import OnlineHPMF


def export_globals(model: OnlineHPMF) -> GlobalsSnapshot:
    """The globals every worker and reader needs, as numpy (see GlobalsSnapshot)."""
    n = model.n_videos
    pm, ps = model._user_prior()
    vm, vs = model._video_prior()
    prior = model.pooled_prior()
    return GlobalsSnapshot(
        version=model.version,
        config=model.config.to_dict(),
        b0=model.global_mean,
        sigma=model.sigma,
        user_prior_mean=pm.numpy().copy(),
        user_prior_scale=ps.numpy().copy(),
        user_prior_cov=prior.cov,
        video_prior_mean=vm.numpy().copy(),
        video_prior_scale=vs.numpy().copy(),
        video_ids=list(model.video_ids),
        video_mean=model._v_mean[:n].numpy().copy(),
        video_cov=model._v_cov[:n].numpy().copy(),
        n_seen=float(model.n_seen),
    )


def import_globals(model: OnlineHPMF, snap: GlobalsSnapshot) -> None:
    """Make ``model`` compute local steps and predictions against ``snap``.

    Used by workers that do not hold the learner role: their model has no
    natural parameters of its own, so :meth:`OnlineHPMF.apply_global` must not
    be called on it (it raises)."""
    snap.validate()
    cfg = model.config
    if snap.dim != cfg.dim:
        raise ValueError(f"globals snapshot has factor dimension {snap.dim}, this model {cfg.dim}")
    hp = Hypers.initial(cfg, b0=snap.b0, sigma=max(snap.sigma, 1e-6))
    with torch.no_grad():
        hp.mu_u_loc.copy_(torch.from_numpy(np.asarray(snap.user_prior_mean, dtype=np.float64)))
        hp.log_s_u.copy_(
            torch.from_numpy(np.log(np.asarray(snap.user_prior_scale, dtype=np.float64)))
        )
        hp.mu_v.copy_(torch.from_numpy(np.asarray(snap.video_prior_mean, dtype=np.float64)))
        hp.log_s_v.copy_(
            torch.from_numpy(np.log(np.asarray(snap.video_prior_scale, dtype=np.float64)))
        )
        extra = np.diag(snap.user_prior_cov) - np.asarray(snap.user_prior_scale) ** 2
        hp.mu_u_log_scale.copy_(torch.from_numpy(0.5 * np.log(np.maximum(extra, 1e-12))))
    model.hp = hp
    model._opt = None
    model.learner = False
    model.version = snap.version
    model.n_seen = int(snap.n_seen)
    v = len(snap.video_ids)
    model._reset_videos(max(64, v))
    model.video_ids = list(snap.video_ids)
    model.video_index = {vid: k for k, vid in enumerate(model.video_ids)}
    model._v_mean[:v] = torch.from_numpy(np.asarray(snap.video_mean, dtype=np.float64))
    model._v_cov[:v] = torch.from_numpy(np.asarray(snap.video_cov, dtype=np.float64))
