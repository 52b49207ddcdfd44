"""A replay sweep as a job: its inputs copied at the start, run at once or in a
background thread, and its result waited for when it is folded in.

The learner of the service runs sweeps in the background
(``HPMFConfig.replay_background``) so the loop that applies batches does not
stop for them; the harness runs them at once, so a replay is deterministic.
The inputs are copies (indexing a tensor copies it), so the global steps that
run meanwhile cannot change what the sweep sees.

>>> import numpy as np
>>> from model.replay_window import ReplayWindow
>>> w = ReplayWindow(10)
>>> w.add(["a", "b"], np.array([0, 1]), np.array([1.0, -1.0]), clock=2.0)
>>> d, f64 = 2, torch.float64
>>> prior = (torch.zeros(d, dtype=f64), torch.ones(d, dtype=f64))
>>> z = torch.zeros(2, d, d, dtype=f64), torch.zeros(2, d, dtype=f64)
>>> inputs = SweepInputs(w.arrays(), torch.tensor([0, 1]), z[1], torch.eye(d, dtype=f64).expand(2, d, d),
...                      *z, torch.tensor(0.0, dtype=f64), torch.tensor(1.0, dtype=f64), prior, prior,
...                      True, 2.0, 100.0, 1, 0)
>>> now = SweepJob.start(inputs, *z, remaps=0, thread=None)
>>> later = SweepJob.start(inputs, *z, remaps=0, thread=SweepThread())
>>> bool(torch.equal(now.result().kept_prec, later.result().kept_prec))
True
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from model.replay_sweep import Candidates, SweepResult, replay_sweep


@dataclass(frozen=True)
class SweepInputs:
    """The arguments of :func:`model.replay_sweep.replay_sweep`, in its order."""

    window: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]
    rows: torch.Tensor
    video_mean: torch.Tensor
    video_cov: torch.Tensor
    base_prec: torch.Tensor
    base_shift: torch.Tensor
    b0: torch.Tensor
    noise_var: torch.Tensor
    user_prior: tuple[torch.Tensor, ...]
    video_prior: tuple[torch.Tensor, ...]
    biases: bool
    clock: float
    effective_data_size: float
    iterations: int
    n_drop: int
    user_variance: float = 1.0
    noise_factor: float = 1.0
    probe: float = 1.0
    holdout: float = 0.0
    previous: Candidates | None = None


def _run(inputs: SweepInputs) -> SweepResult:
    with torch.no_grad():  # grad mode is per thread: say it here too
        return replay_sweep(*(getattr(inputs, f) for f in SweepInputs.__dataclass_fields__))  # type: ignore[arg-type]


SWEEP_NICE = 10
"""How much lower than the process the sweep thread's CPU priority is (Linux
nice steps). A sweep is background work: when the machine has no idle core the
loop that applies batches comes first, and the sweep takes what is left
(MovieLens 100K at minibatch 1024 on a busy 2-core machine: see
docs/evaluation.md). Its torch kernels release the GIL, so the loop is not
stuck behind a descheduled sweep."""


def _lower_priority(nice: int) -> None:
    """Lower the calling thread's CPU priority by ``nice`` steps (Linux: a
    thread is a task with its own nice value; elsewhere nothing happens)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:  # not permitted or not supported: run at the process's priority
        pass


class SweepThread:
    """One background thread for a model's sweeps, started on first use, at a
    CPU priority ``nice`` steps below the process's (:data:`SWEEP_NICE`)."""

    def __init__(self, nice: int = SWEEP_NICE) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self.nice = nice

    def submit(self, inputs: SweepInputs) -> Future[SweepResult]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix="hpmf-replay-sweep",
                initializer=_lower_priority,
                initargs=(self.nice,),
            )
        return self._pool.submit(_run, inputs)


@dataclass
class SweepJob:
    """A sweep started at ``inputs.clock``, with the window share of its videos
    then (decayed to that clock): what its result replaces."""

    inputs: SweepInputs
    window_prec: torch.Tensor
    window_shift: torch.Tensor
    remaps: int
    _future: Future[SweepResult] | None = None
    _result: SweepResult | None = field(default=None, repr=False)

    @classmethod
    def start(
        cls,
        inputs: SweepInputs,
        window_prec: torch.Tensor,
        window_shift: torch.Tensor,
        remaps: int,
        thread: SweepThread | None,
    ) -> SweepJob:
        """Run the sweep now (``thread`` None) or submit it to ``thread``."""
        job = cls(inputs, window_prec, window_shift, remaps)
        if thread is None:
            job._result = _run(inputs)
        else:
            job._future = thread.submit(inputs)
        return job

    def done(self) -> bool:
        return self._result is not None or (self._future is not None and self._future.done())

    def result(self) -> SweepResult:
        """The sweep's result, waiting for it if it still runs (its error, if it failed)."""
        if self._result is None:
            assert self._future is not None
            self._result = self._future.result()
        return self._result
