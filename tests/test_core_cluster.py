"""Dask plumbing: scheduler addresses, an existing cluster by address, worker code checks,
task errors and start events."""

from __future__ import annotations

import os

import pytest

from fpgaprint.core.cluster import (
    Cluster,
    _check_workers,
    check_scheduler,
    code_identity,
    connect,
    fan_out,
    task_started,
)
from fpgaprint.core.errors import InputError, LinkError


@pytest.mark.parametrize("value", ["local", "serial", "tcp://10.0.0.5:8786", "tls://h.x:1",
                                   "tcp://[::1]:8786"])
def test_scheduler_values(value):
    assert check_scheduler(value) == value


@pytest.mark.parametrize("value", ["", "http://h:8786", "tcp://", "h:8786", "tcp://h:8786/x"])
def test_bad_scheduler_values_name_the_flag(value):
    with pytest.raises(InputError, match="--scheduler"):
        check_scheduler(value)


def _square_or_fail(x: int) -> int:
    task_started(item=x)
    if x == 3:
        raise InputError("three is refused")
    return x * x


def test_existing_cluster_by_address_runs_tasks_and_reports_errors_per_task():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as lc:
        started = []
        with connect(lc.scheduler_address) as cluster:
            assert cluster.mode == lc.scheduler_address and len(cluster.workers) == 1
            assert f"scheduler {lc.scheduler_address}: 1 worker(s)" in cluster.describe()
            out = sorted(fan_out(cluster, _square_or_fail, [1, 2, 3, 4],
                                 [f"sq-{i}" for i in range(4)],
                                 lambda i, msg: started.append((i, msg["item"]))),
                         key=lambda o: o.index)
    assert [o.value for o in out] == [1, 4, None, 16]
    assert isinstance(out[2].error, InputError) and "three" in str(out[2].error)
    assert sorted(started) == [(0, 1), (1, 2), (2, 3), (3, 4)]


def _worker_view() -> tuple[str | None, int, bool]:
    import os
    import sys

    return os.environ.get("FPGAPRINT_CLUSTER_MARK"), os.getppid(), "torch" in sys.modules


def test_local_workers_are_forked_preloaded_and_see_this_process_environment(monkeypatch):
    """Workers fork from one forkserver (started with the first cluster, torch already
    imported there), yet each cluster's workers see this process's environment as it is
    when the cluster starts, not as it was when the forkserver started."""
    views = []
    for mark in ("first", "second"):
        monkeypatch.setenv("FPGAPRINT_CLUSTER_MARK", mark)
        with connect("local", 2) as cluster:
            views.append(sorted(cluster.client.run(_worker_view).values()))
    assert [[m for m, _, _ in v] for v in views] == [["first"] * 2, ["second"] * 2]
    parents = {p for v in views for _, p, _ in v}
    assert len(parents) == 1 and parents != {os.getpid()}  # one forkserver, not this process
    assert all(t for v in views for _, _, t in v)


def test_serial_cluster_runs_in_this_process():
    out = list(fan_out(Cluster("serial"), _square_or_fail, [2, 3], ["a", "b"]))
    assert out[0].value == 4 and isinstance(out[1].error, InputError)


def test_unreachable_scheduler_is_a_link_error():
    with pytest.raises(LinkError, match="cannot reach the Dask scheduler"):
        with connect("tcp://127.0.0.1:1", timeout=2):
            pass


class _Stub:
    def __init__(self, idents):
        self.idents = idents

    def run(self, fn):
        return self.idents


def test_workers_with_other_code_are_left_out():
    ours = code_identity()
    other = {"version": ours["version"], "code": "0" * 64}
    ok, refused = _check_workers(_Stub({"tcp://a:1": ours, "tcp://b:1": other}), "tcp://s:1")
    assert ok == ["tcp://a:1"] and "tcp://b:1" in refused and "code 000000000000" in \
        refused["tcp://b:1"]
    with pytest.raises(InputError, match="no worker runs this fpgaprint"):
        _check_workers(_Stub({"tcp://b:1": other}), "tcp://s:1")


def test_a_report_describes_the_cluster_without_its_dashboard():
    """The dashboard dies with the cluster: `describe(live=False)`, what reports keep, leaves
    its address out; the live view shows it."""
    from fpgaprint.core.cluster import LOCAL, Cluster

    c = Cluster(LOCAL, client=object(), workers=["tcp://127.0.0.1:1"],
                dashboard="http://127.0.0.1:8787/status")
    assert c.describe() == ("LocalCluster: 1 worker(s); Dask dashboard "
                            "http://127.0.0.1:8787/status")
    assert c.describe(live=False) == "LocalCluster: 1 worker(s)"
