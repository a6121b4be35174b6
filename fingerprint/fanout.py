"""Named jobs of the fidelity evaluation, serially or on a Dask cluster, with equal results.

Every job runs the same way wherever it runs: on one torch thread with deterministic
algorithms, torch's and numpy's global generators seeded from the job's name. So a job's
result depends on its name and inputs only, not on the order jobs run in, on the process or
on the worker: a run on a cluster equals a serial run with the same seeds.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any, Callable

from fpgaprint.core.cluster import PROCESS_LOCK, Cluster, Outcome, describe_error, fan_out

Job = tuple[str, Callable[..., Any], tuple]  # (name, function, arguments)


def job_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def run_job(job: Job) -> tuple[Any, float]:
    """(result, seconds) of one job, seeded by its name on one deterministic torch thread."""
    import numpy as np
    import torch

    from fpgaprint.compiler.zoo import deterministic_torch

    name, fn, args = job
    seed = job_seed(name)
    with PROCESS_LOCK, deterministic_torch():
        torch.manual_seed(seed)
        np.random.seed(seed)
        t0 = time.perf_counter()
        value = fn(*args)
        return value, time.perf_counter() - t0


def _travels(job: Job) -> bool:
    """Whether a job can be sent to a worker (Brevitas modules, for one, do not pickle)."""
    import cloudpickle

    try:
        cloudpickle.dumps(job)
    except Exception:
        return False
    return True


class Runner:
    """Runs lists of jobs on `cluster` (None: in this process) and returns their outcomes in
    the order given; `say` gets one line per finished job."""

    def __init__(self, cluster: Cluster | None = None, say: Callable[[str], None] | None = None):
        self.cluster = cluster or Cluster("serial")
        self.say = say or (lambda msg: None)

    def map(self, jobs: list[Job]) -> list[Outcome]:
        if not jobs:
            return []
        names = [j[0] for j in jobs]
        if len(set(names)) != len(names):
            raise ValueError("job names must be unique")
        tag = uuid.uuid4().hex[:8]  # Dask keys: unique per call on a shared cluster
        remote = [i for i, j in enumerate(jobs) if self.cluster.client is None or _travels(j)]
        here = [i for i in range(len(jobs)) if i not in set(remote)]
        out: list[Outcome | None] = [None] * len(jobs)
        done = 0
        for where, idx in ((self.cluster, remote), (Cluster("serial"), here)):
            if not idx:
                continue
            keys = [f"fpgaprint-eval-{tag}-{names[i]}" for i in idx]
            for o in fan_out(where, run_job, [jobs[i] for i in idx], keys):
                o.index = idx[o.index]
                out[o.index] = o
                done += 1
                what = ("failed: " + describe_error(o.error)) if o.error is not None \
                    else f"{o.value[1]:.1f} s"
                self.say(f"[{done}/{len(jobs)}] {names[o.index]}: {what}"
                         + (" (here: its inputs do not pickle)" if where is not self.cluster
                            else ""))
        return [o for o in out if o is not None]

    def values(self, jobs: list[Job]) -> list[tuple[Any, float]]:
        """Like `map`, raising the first job's error (in job order)."""
        res = self.map(jobs)
        for o in res:
            if o.error is not None:
                raise o.error
        return [o.value for o in res]
