"""Build matrix on Dask: an 8-build matrix serial vs on a LocalCluster of this machine.

Prints the speed-up and each build's seconds (serial and on the cluster), the task overhead
per build (Dask's round trip for a no-op task, and the idle share of the workers' time
during the matrix), and a projection of the matrix's wall time for N workers from the
measured per-build seconds (longest builds first onto the least loaded worker, plus the
measured overhead). Each mode starts from an empty Verilator cache and one warm-up build per
process (imports, FINN's first use), timed apart. The load average is printed with the
figures: the machine is shared.

    .venv/bin/python bench/scale.py [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import heapq
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

OVERRIDES = [{"name": "w4"}, {"name": "w5", "weight_bits": 5, "act_bits": 5},
             {"name": "w6", "weight_bits": 6, "act_bits": 6},
             {"name": "w8", "weight_bits": 8, "act_bits": 8}]
BOARDS = ["Pynq-Z1", "ZCU104"]


def _warm(model: str, out: str) -> float:
    """One throw-away build in this process: what every process pays once (imports, FINN's
    first use), outside the timings. Returns its seconds."""
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig

    t0 = time.perf_counter()
    build_model(model, "Pynq-Z1", Path(out) / f"warm-{os.getpid()}",
                BuildConfig(equivalence_samples=4), allow_unsigned=True)
    return time.perf_counter() - t0


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its finished children."""
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _noop(x: int) -> int:
    return x


def prepare(d: Path) -> Path:
    from fpgaprint.compiler import modelio, zoo
    from fpgaprint.fingerprint.generate import generate
    from fpgaprint.fingerprint.source import load_model

    modelio.save(zoo.make("digits-mlp", seed=0, epochs=20), d / "model.pt")
    fs = generate(load_model(d / "model.pt"), "robust", 48, seed=0)
    fs.with_threshold(0.5, {"method": "fixed for the benchmark"}).save(d / "fp.npz")
    path = d / "matrix.yaml"
    path.write_text(yaml.safe_dump({
        "models": [{"model": "model.pt", "name": "digits"}], "boards": BOARDS,
        "config": {"equivalence_samples": 16}, "overrides": OVERRIDES,
        "fingerprint": "fp.npz", "unsigned": True}))
    return path


def makespan(seconds: list[float], workers: int, overhead: float) -> float:
    """Wall time of independent tasks on `workers`: longest first onto the least loaded."""
    load = [0.0] * workers
    heapq.heapify(load)
    for s in sorted(seconds, reverse=True):
        heapq.heappush(load, heapq.heappop(load) + s + overhead)
    return max(load)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=None, help="LocalCluster workers [cores]")
    ap.add_argument("--keep", type=Path, default=None, help="keep the build directories here")
    args = ap.parse_args()

    from fpgaprint.compiler.matrix import load_matrix, run_matrix
    from fpgaprint.core.cluster import Cluster, connect, local_workers

    workers = args.workers or local_workers()
    d = args.keep or Path(tempfile.mkdtemp(prefix="fpgaprint-bench-scale-"))
    d.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    print(f"load average before: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
          f"({os.cpu_count()} cores)")
    path = prepare(d)
    # each mode starts from an empty Verilator cache (RTL simulation compiles each new design)
    os.environ["FPGAPRINT_VERILATOR_CACHE"] = str(d / "verilator-serial")
    cold = _warm(str(d / "model.pt"), str(d))

    t0, c0 = time.perf_counter(), _cpu()
    serial = run_matrix(load_matrix(path, d / "serial"), d / "serial", Cluster("serial"))
    t_serial = time.perf_counter() - t0
    cpu_serial = _cpu() - c0  # this process's threads and its children (Verilator, g++)
    os.environ["FPGAPRINT_VERILATOR_CACHE"] = str(d / "verilator-cluster")  # workers inherit

    t0 = time.perf_counter()
    with connect("local", workers) as cluster:
        t_start = time.perf_counter() - t0
        t1 = time.perf_counter()
        cold_workers = cluster.client.run(_warm, str(d / "model.pt"), str(d))
        t_warm = time.perf_counter() - t1
        # Dask's own cost of one task: round trips of no-op tasks, one at a time
        rt = []
        for i in range(30):
            t2 = time.perf_counter()
            cluster.client.submit(_noop, i, pure=False).result()
            rt.append(time.perf_counter() - t2)
        t3 = time.perf_counter()
        fanned = run_matrix(load_matrix(path, d / "cluster"), d / "cluster", cluster)
        t_cluster = time.perf_counter() - t3
    load1 = os.getloadavg()

    bad = [r for r in serial.records + fanned.records if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"builds failed: {[(r['name'], r.get('error')) for r in bad]}")
    same = all(a["package_id"] == b["package_id"] for a, b in zip(serial.records,
                                                                   fanned.records))
    s_secs = [r["seconds"] for r in serial.records]
    c_secs = [r["seconds"] for r in fanned.records]
    mean_build = statistics.mean(s_secs)
    idle = max(0.0, t_cluster * workers - sum(c_secs)) / len(c_secs)
    noop = statistics.median(rt)

    print(f"\n8-build matrix (digits-mlp x {len(BOARDS)} boards x {len(OVERRIDES)} widths, "
          f"16 equivalence vectors, packaged), {workers} LocalCluster workers")
    print(f"{'build':<22}{'serial s':>10}{'cluster s':>11}  worker")
    for a, b in zip(serial.records, fanned.records):
        print(f"{a['name']:<22}{a['seconds']:>10.2f}{b['seconds']:>11.2f}  {b['worker']}")
    print(f"\nserial wall            {t_serial:8.2f} s  (sum of builds {sum(s_secs):.2f} s; "
          f"CPU {cpu_serial:.2f} s with Verilator's compiles = {cpu_serial / t_serial:.2f} cores "
          "busy on average)")
    print(f"cluster wall           {t_cluster:8.2f} s  (sum of builds {sum(c_secs):.2f} s; "
          f"cluster start {t_start:.2f} s, one warm-up build per worker {t_warm:.2f} s, "
          "not counted)")
    print(f"speed-up               {t_serial / t_cluster:8.2f} x  (goal >= 1.7 on 2 cores); "
          f"{(t_serial + cold) / (t_cluster + t_start + t_warm):.2f} x with the start and "
          "each process's first build")
    print(f"first build of a process {cold:6.2f} s here, "
          + ", ".join(f"{v:.2f} s" for v in cold_workers.values()) + " on the workers "
          "(imports, FINN's first use)")
    print(f"per-build slowdown     {statistics.mean(c_secs) / mean_build:8.2f} x  (a build on a "
          f"busy 2-core machine next to another build vs alone)")
    print(f"task overhead          {1000 * noop:8.1f} ms per task (no-op round trip, median "
          f"of {len(rt)}) = {100 * noop / mean_build:.2f} % of a build (goal < 2 %)")
    print(f"idle per build         {idle:8.2f} s = {100 * idle / mean_build:.1f} % of a build "
          "(worker time not spent building: scheduling, the last build's tail)")
    print(f"same package ids       {same}")
    print("\nprojection from the serial per-build seconds (independent builds, one core per "
          "worker, no-op overhead per task):")
    for n in (1, 2, 4, 8, 16):
        wall = makespan(s_secs, n, noop)
        big = makespan(s_secs * 8, n, noop)
        print(f"  {n:>2} workers: this matrix {wall:7.2f} s (speed-up "
              f"{sum(s_secs) / wall:5.2f} x); 64 such builds {big:7.2f} s (speed-up "
              f"{8 * sum(s_secs) / big:5.2f} x)")
    print(f"load average after: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
