"""The fidelity plots stand alone: titles, labelled axes, one scale, legends that hide nothing.
Synthetic results (the evaluation itself is tested in test_fingerprint_eval.py)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402

from fpgaprint.fingerprint.report import (  # noqa: E402
    bitflips_figure,
    match_rates_figure,
    write_report,
)

METHODS = ["vanilla", "robust", "sensitive", "natural", "noise", "adversarial",
           "sensitive-samples", "extra-method"]


def results() -> dict:
    rng = np.random.default_rng(0)
    counts = {"random": [1, 2, 4, 8, 16, 32, 64, 128, 256], "targeted": list(range(1, 11))}
    summary = {}
    for kind, ns in counts.items():
        for mode in ("label", "label_strict", "exact"):
            summary[f"{kind}_{mode}"] = {m: {str(n): float(rng.uniform()) for n in ns}
                                         for m in METHODS}
        summary[f"{kind}_effective"] = {str(n): 1.0 for n in ns}
    summary["random_label"]["vanilla"]["256"] = 0.15
    summary["targeted_exact"]["robust"]["3"] = None
    variants = [{"name": "source", "family": "source", "benign": True, "accuracy": 0.97,
                 "match": {m: 1.0 for m in METHODS}, "detected": {m: False for m in METHODS},
                 "verdict": {m: "PASS" for m in METHODS}}]
    for i in range(14):
        match = {m: 0.95 if i < 4 else float(rng.uniform()) for m in METHODS}
        variants.append({"name": f"v{i}", "family": "ptq" if i < 8 else "swap",
                         "benign": i < 8, "accuracy": 0.9, "match": match,
                         "detected": {m: v < 0.5 for m, v in match.items()},
                         "verdict": {m: "FAIL" if v < 0.5 else "PASS"
                                     for m, v in match.items()}})
    return {"model": {"name": "zoo:digits-mlp", "sha256": "ab" * 32, "kind": "float",
                      "input_shape": [64], "data": "digits"},
            "config": {"count": 100},
            "methods": {m: {"threshold": 0.5, "calibration": {"gap": 0.3}} for m in METHODS},
            "variants": variants, "bitflips": True, "summary": summary}


@pytest.fixture
def res() -> dict:
    return results()


def test_match_rates_has_title_labels_and_a_legend_outside_the_points(res):
    fig = match_rates_figure(res)
    try:
        (ax,) = fig.axes
        assert "Label match rate" in ax.get_title() and "zoo:digits-mlp" in ax.get_title()
        assert ax.get_xlabel() == "fingerprint method" and "label match rate" in ax.get_ylabel()
        assert [t.get_text() for t in ax.get_xticklabels()] == METHODS
        fig.canvas.draw()
        legend = ax.get_legend()
        assert [t.get_text().split(" (")[0] for t in legend.get_texts()] == [
            "benign variant", "malicious variant", "calibrated threshold"]
        renderer = fig.canvas.get_renderer()
        assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
        lo, hi = ax.get_ylim()
        dots = [c for c in ax.collections if isinstance(c, PathCollection)]
        points = np.concatenate([c.get_offsets() for c in dots])
        assert len(points) == len(METHODS) * 14  # every variant but the source, every method
        assert points[:, 1].min() > lo and points[:, 1].max() < hi
        colors = {tuple(np.round(c.get_facecolor()[0], 3)) for c in dots}
        assert len(colors) == 2  # benign and malicious
    finally:
        plt.close(fig)


def test_bitflips_is_one_scale_heat_map_per_attack_and_check(res):
    fig = bitflips_figure(res)
    try:
        maps = [ax for ax in fig.axes if ax.images]
        assert len(maps) == 6  # (random, targeted) x (label, label strict, exact)
        assert {im.get_clim() for ax in maps for im in ax.images} == {(0.0, 1.0)}
        assert {im.get_cmap().name for ax in maps for im in ax.images} == {"viridis"}
        assert "bit flips" in fig.get_suptitle() and "zoo:digits-mlp" in fig.get_suptitle()
        for ax in maps:
            assert ax.get_title() and ax.get_xlabel() == "flipped weight bits"
            rows = len(METHODS) + 1
            assert len(ax.texts) == rows * len(ax.get_xticks())
        first = maps[0]
        assert [t.get_text() for t in first.get_yticklabels()] == [
            "any golden output changes", *METHODS]
        assert [t.get_text() for t in first.get_xticklabels()] == [
            "1", "2", "4", "8", "16", "32", "64", "128", "256"]
        cell = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
                for t in first.texts}
        assert cell[(1, 8)] == "15"  # vanilla, 256 flips: 15 %
        targeted_exact = maps[5]
        cell = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
                for t in targeted_exact.texts}
        assert cell[(2, 2)] == "–"  # no result is shown as such, not as 0
        colorbar = next(ax for ax in fig.axes if not ax.images and ax.get_ylabel())
        assert "detection rate" in colorbar.get_ylabel()
    finally:
        plt.close(fig)


def test_bitflips_without_results_draws_nothing(res):
    res["summary"] = {}
    assert bitflips_figure(res) is None


def test_write_report_writes_every_plot(res, tmp_path):
    paths = write_report(res, tmp_path)
    pngs = [p for p in paths if p.suffix == ".png"]
    assert [p.name for p in pngs] == ["bitflips.png", "match_rates.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
