"""Write the fidelity table: results.json, table.md, plots (matplotlib Agg) and the sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fpgaprint.core.atomic import write_atomic
from fpgaprint.core.fpset import FingerprintSet


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.0f}%"


def _cell(r: dict, k: str) -> str:
    v = r["verdict"][k]
    txt = f"{r['match'][k]:.2f}"
    return f"**{txt}**" if v == "FAIL" else (f"{txt}?" if v == "MARGINAL" else txt)


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
             "## Thresholds (two-sided: held-out benign variants vs independent models)", "",
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
    if res.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def plot_bitflips(res: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    s = res["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, kind, by in ((axes[0], "random", "random bit flips"),
                         (axes[1], "targeted", "targeted (progressive bit search)")):
        for mode, style in (("label", "-"), ("exact", "--")):
            for i, (m, curve) in enumerate(s.get(f"{kind}_{mode}", {}).items()):
                xs = [int(c) for c in curve]
                ys = [np.nan if v is None else v for v in curve.values()]
                ax.plot(xs, ys, style, marker="o", ms=3, color=f"C{i}",
                        label=f"{m} ({mode})" if kind == "random" else None)
        eff = s.get(f"{kind}_effective", {})
        if eff:
            ax.plot([int(c) for c in eff], list(eff.values()), ":", color="k",
                    label="changes any golden output" if kind == "random" else None)
        if kind == "random":
            ax.set_xscale("log", base=2)
        ax.set_xlabel("flipped bits")
        ax.set_ylabel("detection rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(by)
    fig.legend(loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.18, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_match_rates(res: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    methods = list(res["methods"])
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(methods)), 4.5))
    for i, m in enumerate(methods):
        for r in res["variants"]:
            if r["family"] == "source":
                continue
            dx = -0.15 if r["benign"] else 0.15
            ax.scatter(i + dx, r["match"][m], s=14, color="C2" if r["benign"] else "C3",
                       alpha=0.8)
        ax.hlines(res["methods"][m]["threshold"], i - 0.35, i + 0.35, color="k", lw=1)
    ax.scatter([], [], color="C2", label="benign variants")
    ax.scatter([], [], color="C3", label="malicious variants")
    ax.plot([], [], color="k", label="calibrated threshold")
    ax.set_xticks(range(len(methods)), methods, rotation=20, fontsize=8)
    ax.set_ylabel("label match rate")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    fig, axes = plt.subplots(len(names), per_row, figsize=(per_row * 0.9, len(names) * 1.0),
                             squeeze=False)
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
    fig.tight_layout(rect=(0.12, 0, 1, 1))
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
