"""The short human summary of a build report."""

from __future__ import annotations


def summary(report: dict, console) -> None:
    """Equivalence, estimates, layers and steps (progress: stderr); what was produced is the
    build's result (`produced`, on stdout)."""
    from rich.table import Table

    t = Table(title=f"{report['model']} → {report['board']} ({report['part']})", box=None)
    t.add_column("stage")
    t.add_column("equivalence")
    t.add_column("max |diff|", justify="right")
    for r in report.get("equivalence", []):
        verdict = ("bit-exact" if r["exact"] else "float32 ok") if r["ok"] else "MISMATCH"
        t.add_row(r["stage"], verdict, f"{r['max_abs_diff']:.3g}")
    console.print(t)
    est = report.get("estimates", {})
    tot = est.get("resources_total", {})
    if tot:
        res = ", ".join(f"{k} {v:.0f}" for k, v in tot.items() if k in ("LUT", "BRAM_18K", "DSP",
                                                                     "URAM"))
        fps = est.get("estimated_fps")
        console.print(f"estimate: {res}; {est.get('max_cycles')} cycles/frame"
                      + (f", {fps:,.0f} FPS at {est['clock_ns']} ns" if fps else ""))
    grid = report.get("input_grid")
    if grid:
        console.print(f"input grid: {grid['datatype']}, x = q · {grid['scale']:.6g} "
                      f"({'default' if grid['source'] == 'default' else grid['source']})")
    from fpgaprint.compiler.rtlsim.stage import summary as rtl_summary

    rtl_summary(report, console)  # layers, implementation, rtlsim, stitched cycles per frame
    from fpgaprint.compiler.bist.stage import summary as bist_summary

    bist_summary(report, console)  # on-chip self-test: exact vs signature, simulated result
    steps = report.get("steps", [])
    reused = [s["name"] for s in steps if s.get("skipped")]
    console.print(f"{len(steps)} steps in {report.get('seconds', 0):.1f} s"
                  + (f" ({len(reused)} reused from the previous build)" if reused else ""))


def produced(report: dict, out=None) -> list[str]:
    """What the build wrote: the package (path, id, signed or not), or that there is none."""
    where = out if out is not None else "the build directory"
    pkg = report.get("package")
    if pkg is None:
        return [f"no package written: {where} holds the build (golden model, steps, reports); "
                "build with --fingerprint FPSET to write a signed package"]
    signed = (f"signed by {pkg['signer']}" if pkg["signed"] else
              "UNSIGNED (--allow-unsigned: for development only)")
    lines = [f"package: {where}", f"package id: {pkg['package_id']}", f"signature: {signed}"]
    if pkg.get("tar"):
        lines.append(f"archive: {str(out).rstrip('/')}.tar.gz" if out is not None else
                     "archive: DIR.tar.gz")
    return lines
