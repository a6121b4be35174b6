"""Write the fidelity table: results.json, table.md, plots (matplotlib Agg) and the sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fpgaprint.core.atomic import write_atomic
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.fingerprint.power import BAUD


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _cell(r: dict, k: str) -> str:
    v = r["verdict"][k]
    txt = f"{r['match'][k]:.2f}"
    return f"**{txt}**" if v == "FAIL" else (f"{txt}?" if v == "MARGINAL" else txt)


def calibration_lines(cal: dict) -> list[str]:
    """What a calibration report says about separation, the score level and power."""
    out = []
    if "separates" in cal:
        out.append("separates: " + ("yes, every attack is below the threshold" if
                                    cal["separates"] else
                                    "NO: not rejected " + ", ".join(cal["not_rejected"])
                                    + ("; no threshold separates them" if cal.get("no_threshold")
                                       else "")))
    sc = cal.get("score")
    if sc:
        out.append(f"score level ({sc['statistic']}): threshold {sc['threshold']:.3f} from "
                   f"{sc['worst_benign']}; " + ("rejects every attack" if sc["separates"] else
                                                "does not reject " + ", ".join(
                                                    sc["not_rejected"])))
    kept = cal.get("score_check")
    if kept:
        out.append("score check: " + ("carried by the set: " if kept["kept"] else
                                      "not carried: ") + kept["why"])
    pw = cal.get("power")
    if pw:
        need = pw["vectors_needed"]
        out.append(f"power: against {pw['against']} (gap {pw['gap']:.3f}) "
                   + (f"{need} vectors separate the intervals, about {pw['line_seconds']:.1f} s "
                      f"on the line at {pw['baud']} baud" if need else
                      f"no N up to {pw['cap']} separates the intervals")
                   + f"; this set's {cal['count']} take about {pw['line_seconds_now']:.1f} s"
                   + (f"; against the independent models alone {pw['vectors_needed_independent']}"
                      " vectors" if pw.get("vectors_needed_independent") else ""))
    return out


def markdown(res: dict) -> str:
    methods = list(res["methods"])
    head = "| " + " | ".join(methods) + " |"
    sep = "|" + "---|" * len(methods)
    m = res["model"]
    cal = res.get("calibration", {})
    lines = [f"# Fingerprint fidelity: {m['name']}", "",
             f"Model sha256 `{m['sha256'][:16]}`, {m['kind']}, input {tuple(m['input_shape'])}, "
             f"evaluation data {m['data']} (accuracy {m.get('accuracy', float('nan')):.3f}); "
             f"{res['config']['count']} vectors per method.", "",
             "## Thresholds (the worst held-out benign variant's lower bound, checked against "
             "independent models and impostors)", "",
             "Benign side: " + (", ".join(f"{k} (accuracy {v['accuracy']:.3f})"
                                          for k, v in cal.get("benign", {}).items()) or "none")
             + ". Excluded (lose more than 5 points): "
             + (", ".join(f"{k} ({v['accuracy']:.3f})" for k, v in cal.get("excluded", {}).items())
                or "none") + ". Attack side: "
             + (", ".join(cal.get("attack", {})) or "none") + ".", "",
             "| | " + head[2:], "|---" + sep,
             "| threshold | " + " | ".join(f"{res['methods'][k]['threshold']:.3f}"
                                          for k in methods) + " |",
             "| gap (worst benign - best attack) | "
             + " | ".join("strict" if k == "boundary" else
                          f"{res['methods'][k]['calibration'].get('gap', float('nan')):.3f}"
                          for k in methods) + " |",
             "",
             "## Match rate per variant (**bold** = FAIL, ? = MARGINAL: the interval straddles "
             "the threshold)", "",
             "Boundary: share of labels equal to the deployed model's (strict: any difference "
             "fails, so it flags every model variant by design).", "",
             "| variant | family | accuracy | " + head[2:], "|---|---|---" + sep]
    for r in res["variants"]:
        kind = "benign" if r["benign"] else "attack"
        if r["benign"] and not r.get("in_scope", True):
            kind = "benign, loses > 5 points"
        seen = r.get("info", {}).get("seen_by")
        if seen:
            kind += f"; seen by the {seen.split(' ', 1)[1]}"
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines.append(f"| {r['name']} | {r['family']} ({kind}) | {acc} | "
                     + " | ".join(_cell(r, k) for k in methods) + " |")
    s = res["summary"]
    for title, key in (("False alarms (FAIL) per benign family, variants losing at most 5 "
                        "points", "false_alarm"),
                       ("MARGINAL verdicts per benign family (no confident verdict, exit 3)",
                        "marginal_benign"),
                       ("Detection (FAIL) per attack and fault family", "detection"),
                       ("Not passed (FAIL or MARGINAL) per attack and fault family",
                        "not_pass")):
        lines += ["", f"## {title}", "", "| family | " + head[2:], "|---" + sep]
        for fam, by in s.get(key, {}).items():
            lines.append(f"| {fam} | " + " | ".join(_pct(by[k]) for k in methods) + " |")
    rep = s.get("repeated_checks") or {}
    if rep:
        lines += ["", "## The unmodified deployed model, checked repeatedly in random order", "",
                  "| | " + head[2:], "|---" + sep,
                  "| checks not PASS | " + " | ".join(
                      f"{rep[k]['not_pass']}/{rep[k]['checks']}" if k in rep else "n/a"
                      for k in methods) + " |"]
    for kind, by, label in (("random", "n", "random flips"), ("targeted", "k", "targeted flips")):
        for mode in ("label", "label_strict", "exact"):
            curve = s.get(f"{kind}_{mode}")
            if not curve or not next(iter(curve.values())):
                continue
            counts = list(next(iter(curve.values())))
            eff = s.get(f"{kind}_effective", {})
            title = {"label": "label-only mode: the set's verdict is FAIL",
                     "label_strict": "label-only mode, strict: any label differs from the "
                                     "golden's", "exact": "exact mode"}[mode]
            lines += ["", f"## Detection of {label} ({title}) by number of flipped bits", "",
                      f"| {by} | changes any golden output | " + head[2:],
                      "|---|---" + sep]
            for c in counts:
                lines.append(f"| {c} | {_pct(eff.get(c))} | "
                             + " | ".join(_pct(curve[k][c]) for k in methods) + " |")
    sw = s.get("single_weight")
    if sw:
        lines += ["", f"## Single random weight-bit flips of the deployed model ({sw['flips']}, "
                  f"{sw['effective']} change some golden output)", "",
                  "| mode | " + head[2:], "|---" + sep,
                  "| label-only: the set's verdict is FAIL | "
                  + " | ".join(_pct(sw["label"][k]) for k in methods) + " |",
                  "| label-only, strict (any label differs from the golden's) | "
                  + " | ".join(_pct(sw["label_strict"][k]) for k in methods) + " |",
                  "| exact, of effective flips | "
                  + " | ".join(_pct(sw["exact_of_effective"][k]) for k in methods) + " |"]
    lines += _calibration_section(res, methods)
    lines += _tradeoff_section(s, methods)
    nd = s.get("natural_draws")
    if nd:
        lines += ["", f"## Natural baseline of single weight-bit flips over {len(nd['rates'])} "
                  "draws", "", f"Share of flips that change any label of a draw of "
                  f"{res['config']['count']} held-out samples: mean {nd['mean']:.3f}, sd "
                  f"{nd['std']:.3f}, range {nd['min']:.3f}-{nd['max']:.3f}."]
    if res.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def _calibration_section(res: dict, methods: list[str]) -> list[str]:
    cals = {m: res["methods"][m]["calibration"] for m in methods if m != "boundary"}
    if not any("separates" in c for c in cals.values()):
        return []
    bauds = sorted({c.get("power", {}).get("baud", BAUD) for c in cals.values()})
    at = " / ".join(map(str, bauds)) or str(BAUD)
    out = ["", "## Calibration: the benign side's threshold against every attack", "",
           "| method | threshold | worst benign | rejects all | not rejected | score threshold "
           f"| score not rejected | vectors needed | line s at {at} baud |",
           "|---|---|---|---|---|---|---|---|---|"]
    for m, c in cals.items():
        if "separates" not in c:
            continue
        sc, pw = c.get("score", {}), c.get("power", {})
        need = pw.get("vectors_needed")
        out.append(
            f"| {m} | {res['methods'][m]['threshold']:.3f} | {c['worst_benign']} "
            f"{c['benign'][c['worst_benign']]['match_rate']:.2f} | "
            f"{'yes' if c['separates'] else 'NO'} | "
            + (", ".join(f"{k} {({**c['attack'], **c['impostor']})[k]['match_rate']:.2f}"
                         for k in c["not_rejected"]) or "-")
            + (" (no threshold separates)" if c.get("no_threshold") else "") + " | "
            + (f"{sc['threshold']:.3f} | " + (", ".join(sc["not_rejected"]) or "-")
               if sc else "n/a | n/a") + " | "
            + (f"{need} | {pw['line_seconds']:.1f}" if need else
               f"> {pw.get('cap', 500)} | -") + " |")
    return out


def _tradeoff_section(s: dict, methods: list[str]) -> list[str]:
    to = s.get("tradeoff") or {}
    out = []
    for stat, title in (("label", "label match rate"), ("score", "score level (margin "
                                                                    "correlation)")):
        by = to.get(stat) or {}
        if not by:
            continue
        fams = sorted({f for t in by.values() for f in t["at_zero"]})
        out += ["", f"## Trade-off, {title}: detection at the highest threshold without a "
                "false alarm / false alarms that detecting the whole family costs", "",
                "| family | " + " | ".join(by) + " |", "|---" + "|---" * len(by) + "|"]
        for f in fams:
            out.append(f"| {f} | " + " | ".join(
                f"{_pct(t['at_zero'].get(f))} / {_pct(t['for_full'].get(f))}"
                for t in by.values()) + " |")
    u = s.get("uniqueness") or {}
    if u:
        out += ["", "## Uniqueness Score (robustness - transferability: mean match of the "
                "held-out benign rows losing at most 5 points minus that of the swaps)", "",
                "| | " + " | ".join(u) + " |", "|---" + "|---" * len(u) + "|",
                "| Uniqueness Score | " + " | ".join(f"{v['uniqueness']:.3f}"
                                                    for v in u.values()) + " |",
                "| robustness | " + " | ".join(f"{v['robustness']:.3f}" for v in u.values())
                + " |",
                "| transferability | " + " | ".join(f"{v['transferability']:.3f}"
                                                   for v in u.values()) + " |"]
    return out


# Okabe & Ito's colour-blind-safe palette; the sequential maps are viridis (perceptually
# uniform, readable in grey).
BENIGN, MALICIOUS, THRESHOLD = "#0072B2", "#D55E00", "#000000"
MODES = {"label": "label-only check at the calibrated threshold",
         "label_strict": "label-only check, strict (any label differs)",
         "exact": "exact check (raw output = golden)"}
ATTACKS = {"random": "random flips", "targeted": "targeted flips (progressive bit search)"}


def _model_title(res: dict) -> str:
    m = res.get("model", {})
    return f"{m.get('name', 'model')}, {res.get('config', {}).get('count', '?')} vectors per method"


def bitflips_figure(res: dict):
    """Detection rate per method and number of flipped weight bits: one heat map per attack
    (rows) and check (columns), all on one 0-100 % colour scale, every cell labelled; None
    without bit-flip results."""
    import matplotlib.pyplot as plt

    s = res["summary"]
    kinds = [k for k in ATTACKS if any(s.get(f"{k}_{m}") for m in MODES)]
    modes = [m for m in MODES if any(s.get(f"{k}_{m}") for k in kinds)]
    if not kinds or not modes:
        return None
    methods = list(res["methods"])
    rows = ["any golden output changes", *methods]
    ncols = max(len(next(iter(s[f"{k}_{m}"].values()))) for k in kinds for m in modes
                if s.get(f"{k}_{m}"))
    fig, axes = plt.subplots(len(kinds), len(modes), squeeze=False,
                             figsize=(1.6 + 0.55 * ncols * len(modes), 1.2 + 0.33 * len(rows)
                                      * len(kinds)), constrained_layout=True)
    image = None
    for r, kind in enumerate(kinds):
        for c, mode in enumerate(modes):
            ax = axes[r][c]
            curve = s.get(f"{kind}_{mode}") or {}
            counts = list(next(iter(curve.values()))) if curve else []
            eff = s.get(f"{kind}_effective", {})
            grid = np.array([[np.nan if (v := (eff if i == 0 else curve.get(name, {})).get(n))
                              is None else v for n in counts]
                             for i, name in enumerate(rows)], dtype=float)
            image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
            for (i, j), v in np.ndenumerate(grid):
                ax.text(j, i, "–" if np.isnan(v) else f"{100 * v:.0f}", ha="center",
                        va="center", fontsize=6.5, color="black" if v > 0.6 else "white")
            ax.axhline(0.5, color="white", lw=2)
            ax.set_xticks(range(len(counts)), counts, fontsize=7)
            ax.set_yticks(range(len(rows)), rows if c == 0 else [""] * len(rows), fontsize=7)
            ax.set_xlabel("flipped weight bits", fontsize=8)
            ax.set_title(f"{ATTACKS[kind]}\n{MODES[mode]}", fontsize=8.5)
    cbar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01)
    cbar.set_label("detection rate (% of flip sets detected)", fontsize=8)
    cbar.ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    fig.suptitle("Detection of weight-memory bit flips by fingerprint method "
                 f"({_model_title(res)})", fontsize=10)
    return fig


def plot_bitflips(res: dict, path: Path) -> None:
    _save(bitflips_figure(res), path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    if fig is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)


def match_rates_figure(res: dict):
    """Label match rate of every fingerprint method on every benign and malicious variant,
    with each method's calibrated threshold; variants below it are detected."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    methods = list(res["methods"])
    variants = [r for r in res["variants"] if r["family"] != "source"]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.25 * len(methods) + 3), 4.8),
                           constrained_layout=True)
    for i, m in enumerate(methods):
        for benign, dx, color, marker in ((True, -0.17, BENIGN, "o"),
                                          (False, 0.17, MALICIOUS, "X")):
            ys = np.array([r["match"][m] for r in variants if r["benign"] == benign])
            jitter = (np.arange(len(ys)) % 5 - 2) * 0.035  # spread equal rates sideways
            ax.scatter(i + dx + jitter, ys, s=26, color=color, marker=marker, alpha=0.85,
                       edgecolor="white", linewidth=0.4, zorder=3)
        ax.hlines(res["methods"][m]["threshold"], i - 0.42, i + 0.42, color=THRESHOLD, lw=1.6,
                  zorder=2)
    ax.set_xticks(range(len(methods)), methods, rotation=20, fontsize=8)
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(axis="y", alpha=0.3)
    ax.set_xlabel("fingerprint method")
    ax.set_ylabel("label match rate\n(share of vectors labelled as by the source model)")
    ax.set_title(f"Label match rate on model variants ({_model_title(res)})", fontsize=10)
    n_b = sum(r["benign"] for r in variants)
    handles = [Line2D([], [], ls="", marker="o", color=BENIGN,
                      label=f"benign variant ({n_b}): should stay above"),
               Line2D([], [], ls="", marker="X", color=MALICIOUS,
                      label=f"malicious variant ({len(variants) - n_b}): should fall below"),
               Line2D([], [], color=THRESHOLD, lw=1.6, label="calibrated threshold")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              frameon=False)
    return fig


def plot_match_rates(res: dict, path: Path) -> None:
    _save(match_rates_figure(res), path)


def _as_image(x: np.ndarray) -> np.ndarray:
    if x.ndim == 1:
        side = int(round(np.sqrt(x.size)))
        return x.reshape(side, side) if side * side == x.size else x[None]
    if x.ndim == 3:
        return x[0] if x.shape[0] == 1 else np.moveaxis(x, 0, -1)
    return x


def plot_examples(sets: dict[str, FingerprintSet], path: Path, per_row: int = 10) -> None:
    """One row per method: the first example of each class."""
    import matplotlib.pyplot as plt

    names = list(sets)
    fig, axes = plt.subplots(len(names), per_row, squeeze=False,
                             figsize=(per_row * 0.9, len(names) * 1.0 + 0.8))
    for r, name in enumerate(names):
        fs = sets[name]
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            idx = np.flatnonzero(fs.labels == c)
            if len(idx):
                ax.imshow(_as_image(fs.inputs[idx[0]]), cmap="gray", vmin=0, vmax=1)
                ax.set_title(str(c), fontsize=6)
        axes[r][0].text(-0.3, 0.5, name, transform=axes[r][0].transAxes, ha="right",
                        va="center", fontsize=7)
    fig.suptitle("First example of each class, per method (the class above each image; "
                 "blank: no example of that class)", fontsize=9)
    fig.tight_layout(rect=(0.12, 0, 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(res: dict, out: str | Path, sets: dict[str, FingerprintSet] | None = None
                 ) -> list[Path]:
    """results.json, table.md, bitflips.png, match_rates.png, examples.png, sets/*.npz."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "results.json", out / "table.md"]
    write_atomic(paths[0], json.dumps(res, indent=1, sort_keys=False))
    write_atomic(paths[1], markdown(res))
    if res.get("bitflips"):
        plot_bitflips(res, out / "bitflips.png")
        paths.append(out / "bitflips.png")
    plot_match_rates(res, out / "match_rates.png")
    paths.append(out / "match_rates.png")
    if sets:
        plot_examples(sets, out / "examples.png")
        paths.append(out / "examples.png")
        for name, fs in sets.items():
            paths.append(fs.save(out / "sets" / f"{name}.npz"))
    return paths
