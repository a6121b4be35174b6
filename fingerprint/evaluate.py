"""The fidelity table: every fingerprint method against benign and malicious variants.

Methods are the three intrinsic-example algorithms and the baselines, all at the same vector
budget and each calibrated the same data-free way. Variants that train use the evaluator's
data set (the zoo model's). Bit flips act on the FINN-compiled golden model's memories.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fpgaprint.compiler.data import Dataset, load_digits, upsample_digits
from fpgaprint.core.errors import FpgaprintError, InputError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.grid import InputGrid
from fpgaprint.core.words import random_flips
from fpgaprint.fingerprint import baselines, bitflips, variants
from fpgaprint.fingerprint.calibrate import benign_variants, calibrate, threshold_from
from fpgaprint.fingerprint.check import match_rate
from fpgaprint.fingerprint.generate import ALGORITHMS, generate
from fpgaprint.fingerprint.source import GoldenRunner, Model, load_model

BENIGN_FAMILIES = ("ptq", "qat", "prune+ft", "finn-golden")
MALICIOUS_FAMILIES = ("swap", "transfer", "finetune-shifted", "backdoor")


@dataclass
class EvalConfig:
    count: int = 100
    seed: int = 0
    methods: tuple[str, ...] = ALGORITHMS + baselines.BASELINES
    ptq_bits: tuple[int, ...] = (8, 6, 4)
    qat_bits: tuple[int, ...] = (4, 2)
    prune_fractions: tuple[float, ...] = (0.5, 0.7, 0.9)
    swap_seeds: tuple[int, ...] = (1, 2, 3)
    epochs: int = 5
    flip_counts: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    flip_seeds: int = 20
    single_flip_seeds: int = 200
    pbs_flips: int = 10
    pbs_seeds: int = 3
    pool_noise: int = 500
    build: bool = True
    build_dir: str | None = None
    golden: str | None = None  # an existing golden.onnx of this model: no build

    @classmethod
    def quick(cls) -> "EvalConfig":
        return cls(count=40, ptq_bits=(8, 4), qat_bits=(4,), prune_fractions=(0.5, 0.9),
                   swap_seeds=(1,), epochs=2, flip_counts=(1, 16, 256), flip_seeds=3,
                   single_flip_seeds=20, pbs_flips=3, pbs_seeds=1, pool_noise=100)


def dataset_for(model: Model, seed: int = 0) -> Dataset:
    """The evaluator's data: the zoo model's data set, else digits shaped to the input."""
    if model.zoo:
        from fpgaprint.compiler.zoo import get_entry

        return get_entry(model.zoo).data(seed)
    shape = tuple(model.input_shape)
    if shape == (64,):
        return load_digits(seed=seed)
    if len(shape) == 3 and shape[-1] == shape[-2]:
        return upsample_digits(load_digits(seed=seed), shape)
    raise InputError(f"{model.name}: no evaluation data set for input shape {shape}")


def _say(progress: bool) -> Callable[[str], None]:
    if not progress:
        return lambda msg: None
    from rich.console import Console

    console = Console(stderr=True)
    return lambda msg: console.log(msg)


class Evaluation:
    def __init__(self, spec, cfg: EvalConfig, progress: bool = False):
        self.cfg = cfg
        self.say = _say(progress)
        self.spec = spec
        self.src = load_model(spec)
        if self.src.module is None:
            raise InputError(f"{self.src.name}: the fidelity table needs a PyTorch/Brevitas model")
        self.data = dataset_for(self.src, cfg.seed)
        self.grid = InputGrid()
        self.sets: dict[str, FingerprintSet] = {}  # calibrated data-free (as generated)
        self.with_data: dict[str, FingerprintSet] = {}  # the same calibrated with data
        self.rows: list[dict] = []
        self.golden = None
        self.notes: list[str] = []

    # -- methods ---------------------------------------------------------------------------
    def make_sets(self) -> None:
        c, s, src, data = self.cfg.count, self.cfg.seed, self.src, self.data
        makers = {
            **{a: (lambda a=a: generate(src, a, c, seed=s)) for a in ALGORITHMS},
            "natural": lambda: baselines.natural(src, data, c, s),
            "noise": lambda: baselines.noise(src, c, s),
            "adversarial": lambda: baselines.adversarial(src, data, c, s),
            "sensitive-samples": lambda: baselines.sensitive_samples(
                src, data, c, s, steps=20 if src.kind == "float" else 5),
        }
        self.say("calibration variants with data (pruning + fine-tune, PTQ on data)")
        made, skipped = benign_variants(src, data.x_train[:512], data, s)
        for m in self.cfg.methods:
            self.say(f"vectors: {m}")
            fs = makers[m]()
            self.sets[m] = calibrate(fs, src)
            self.with_data[m] = threshold_from(fs, made, skipped, data=data)

    # -- variants --------------------------------------------------------------------------
    def add_row(self, name: str, family: str, benign: bool, model: Model, info: dict | None = None
                ) -> None:
        match = {m: match_rate(model, fs) for m, fs in self.sets.items()}
        acc = float((model.predict(self.data.x_test) == self.data.y_test).mean())
        self.rows.append({
            "name": name, "family": family, "benign": benign, "accuracy": acc,
            "match": match, "detected": {m: match[m] < self.sets[m].threshold for m in match},
            "detected_data": {m: match[m] < self.with_data[m].threshold for m in match},
            "info": info or {},
        })

    def make_variants(self) -> None:
        cfg, src, data = self.cfg, self.src, self.data
        self.add_row("source", "source", True, src)
        jobs: list[tuple[str, str, bool, Callable[[], object]]] = []
        if src.kind == "float":
            for b in cfg.ptq_bits:
                jobs.append((f"ptq{b}", "ptq", True,
                             lambda b=b: variants.ptq(src, b, data.x_train[:512])))
            for b in cfg.qat_bits:
                jobs.append((f"qat{b}", "qat", True,
                             lambda b=b: variants.qat(src, b, data, epochs=cfg.epochs)))
        else:
            jobs.append(("qat", "qat", True, lambda: variants.qat(src, 0, data, cfg.epochs)))
        for f in cfg.prune_fractions:
            jobs.append((f"prune{round(f * 100)}+ft", "prune+ft", True,
                         lambda f=f: variants.prune(src, f, data, epochs=2 * cfg.epochs,
                                                    lr=5e-3)))
        if src.zoo:
            for sd in cfg.swap_seeds:
                jobs.append((f"swap-seed{sd}", "swap", False,
                             lambda sd=sd: variants.retrained(src.zoo, sd)))
        else:
            self.notes.append("swap: the source is not a zoo model, no retraining recipe")
        jobs += [
            ("transfer", "transfer", False,
             lambda: variants.transfer(src, data, epochs=2 * cfg.epochs)),
            ("finetune-shifted", "finetune-shifted", False,
             lambda: variants.shifted_finetune(src, data, epochs=cfg.epochs)),
            ("backdoor", "backdoor", False,
             lambda: variants.backdoor(src, data, epochs=cfg.epochs)),
        ]
        for name, family, benign, build in jobs:
            self.say(f"variant: {name}")
            try:
                made = build()
            except FpgaprintError as e:
                self.notes.append(f"{name}: {e}")
                continue
            model, info = made if isinstance(made, tuple) else (made, {})
            self.add_row(name, family, benign, model, info)

    # -- golden and bit flips --------------------------------------------------------------
    def build_golden(self) -> None:
        from fpgaprint.compiler.build import build_model
        from fpgaprint.core.golden import GoldenModel

        spec = self.spec if isinstance(self.spec, str) else None
        if self.cfg.golden:
            path, info = Path(self.cfg.golden), {"golden": self.cfg.golden}
            _check_golden_source(path, self.src.sha256)
        elif spec is None or not self.cfg.build:
            self.notes.append("finn-golden and bit flips: no build (model not given by name)")
            return
        else:
            out = Path(self.cfg.build_dir or tempfile.mkdtemp(prefix="fpgaprint-eval-")) / "build"
            self.say(f"FINN build of {spec} into {out}")
            res = build_model(spec, out=out, allow_unsigned=True)
            if not res.golden_path.is_file():
                self.notes.append(f"finn-golden: build failed: {res.report.get('error')}")
                return
            path, info = res.golden_path, {"build": str(out), "status": res.report.get("status")}
        self.golden = GoldenModel(path)
        model = Model(self.src.input_shape, self.src.num_classes, "golden", "golden",
                      "finn-golden", runner=GoldenRunner(self.golden, self.grid.bits))
        self.add_row("finn-golden", "finn-golden", True, model, info)

    def _flip_record(self, flipped, ref_raw: dict, pool_raw: np.ndarray, pool: np.ndarray
                     ) -> dict:
        raw_all, _, labels_all = flipped.run(self._all_q)
        rec = {"label_match": {}, "detected_label": {}, "detected_label_strict": {},
               "detected_exact": {}}
        for m, sl in self._slices.items():
            rate = float((labels_all[sl] == self.sets[m].labels).mean())
            rec["label_match"][m] = rate
            rec["detected_label"][m] = rate < self.sets[m].threshold
            rec["detected_label_strict"][m] = bool((labels_all[sl] != self._ref_labels[sl]).any())
            rec["detected_exact"][m] = bool((raw_all[sl] != ref_raw[m]).any())
        rec["effective"] = bool((flipped.run(pool)[0] != pool_raw).any())
        return rec

    def bitflips(self) -> dict:
        if self.golden is None:
            return {}
        cfg, g = self.cfg, self.golden
        self._slices, start, qs = {}, 0, []
        for m, fs in self.sets.items():
            self._slices[m] = slice(start, start + len(fs))
            start += len(fs)
            qs.append(fs.inputs_int.reshape(len(fs), -1))
        self._all_q = np.concatenate(qs)
        ref_all, _, self._ref_labels = g.run(self._all_q)
        ref_raw = {m: ref_all[sl] for m, sl in self._slices.items()}
        rng = np.random.default_rng(cfg.seed)
        pool = np.concatenate([
            self.grid.to_int(self.data.x_test).reshape(len(self.data.x_test), -1),
            rng.integers(0, self.grid.qmax + 1, (cfg.pool_noise, self._all_q.shape[1])),
        ])
        pool_raw = g.run(pool)[0]
        mems = g.memories()
        out: dict = {"random": [], "single_weight": [], "targeted": []}
        for n in cfg.flip_counts:
            self.say(f"random bit flips: {n} x {cfg.flip_seeds} seeds")
            for s in range(cfg.flip_seeds):
                flips = random_flips(mems, n, np.random.default_rng([cfg.seed, n, s]))
                out["random"].append({"n": n, "seed": s,
                                      **self._flip_record(g.flipped(flips), ref_raw, pool_raw,
                                                          pool)})
        self.say(f"single weight-bit flips: {cfg.single_flip_seeds}")
        for s in range(cfg.single_flip_seeds):
            flips = random_flips(mems, 1, np.random.default_rng([cfg.seed, 1, 10**6 + s]),
                                          kinds=("weights",))
            out["single_weight"].append({"n": 1, "seed": s, "flip": list(flips[0]),
                                         **self._flip_record(g.flipped(flips), ref_raw,
                                                             pool_raw, pool)})
        try:
            bitflips.Surrogate(g)
        except InputError as e:
            self.notes.append(f"targeted bit flips: {e}")
            return out
        x_att = self.grid.to_int(self.data.x_test).reshape(len(self.data.x_test), -1)
        for s in range(cfg.pbs_seeds):
            self.say(f"progressive bit search, attacker batch {s}")
            idx = np.random.default_rng([cfg.seed, 7, s]).choice(len(x_att), 128, replace=False)
            steps = bitflips.progressive_bit_search(g, x_att[idx], self.data.y_test[idx],
                                                    cfg.pbs_flips)
            for k, flips in enumerate(steps, 1):
                flipped = g.flipped(flips)
                acc = float((flipped.run(x_att)[2] == self.data.y_test).mean())
                out["targeted"].append({"k": k, "seed": s, "flips": [list(f) for f in flips],
                                        "accuracy": acc,
                                        **self._flip_record(flipped, ref_raw, pool_raw, pool)})
        return out

    def run(self) -> dict:
        self.make_sets()
        self.make_variants()
        self.build_golden()
        flips = self.bitflips()
        return {
            "model": {"name": self.src.name, "kind": self.src.kind, "sha256": self.src.sha256,
                      "input_shape": list(self.src.input_shape), "data": self.data.name},
            "config": _jsonable(asdict(self.cfg)),
            "methods": {m: {"threshold": fs.threshold, "calibration": fs.calibration,
                            "threshold_data": self.with_data[m].threshold,
                            "calibration_data": self.with_data[m].calibration,
                            "count": len(fs), "min_margin": float(fs.margins.min())}
                        for m, fs in self.sets.items()},
            "variants": self.rows,
            "bitflips": flips,
            "summary": summarize(self.rows, flips, list(self.sets)),
            "notes": self.notes,
        }


def _rate(xs: list[bool]) -> float | None:
    return float(np.mean(xs)) if xs else None


def summarize(rows: list[dict], flips: dict, methods: list[str]) -> dict:
    """False alarms per benign family, detection per attack family, bit-flip curves."""
    fam: dict[str, dict] = {}
    for suffix in ("", "_data"):
        fam[f"false_alarm{suffix}"], fam[f"detection{suffix}"] = {}, {}
        for r in rows:
            if r["family"] == "source":
                continue
            key = ("false_alarm" if r["benign"] else "detection") + suffix
            fam[key].setdefault(r["family"], {m: [] for m in methods})
            for m in methods:
                fam[key][r["family"]][m].append(bool(r[f"detected{suffix}"][m]))
    out: dict = {k: {f: {m: _rate(v) for m, v in d.items()} for f, d in fams.items()}
                 for k, fams in fam.items()}
    for kind, by in (("random", "n"), ("targeted", "k")):
        recs = flips.get(kind, [])
        counts = sorted({r[by] for r in recs})
        for mode in ("label", "label_strict", "exact"):
            out[f"{kind}_{mode}"] = {
                m: {str(c): _rate([r[f"detected_{mode}"][m] for r in recs if r[by] == c])
                    for c in counts} for m in methods}
        out[f"{kind}_effective"] = {str(c): _rate([r["effective"] for r in recs if r[by] == c])
                                    for c in counts}
    single = flips.get("single_weight", [])
    if single:
        eff = [r for r in single if r["effective"]]
        out["single_weight"] = {
            "flips": len(single), "effective": len(eff),
            "label": {m: _rate([r["detected_label"][m] for r in single]) for m in methods},
            "label_strict": {m: _rate([r["detected_label_strict"][m] for r in single])
                             for m in methods},
            "exact_of_effective": {m: _rate([r["detected_exact"][m] for r in eff])
                                   for m in methods},
        }
    for kind in ("random", "targeted"):
        eff = [r for r in flips.get(kind, []) if r["effective"]]
        if eff:
            out[f"{kind}_exact_of_effective"] = {
                m: _rate([r["detected_exact"][m] for r in eff]) for m in methods}
    return out


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    return d


def evaluate(spec, cfg: EvalConfig | None = None, progress: bool = False
             ) -> tuple[dict, dict[str, FingerprintSet]]:
    """Run the whole evaluation of the model named by `spec`: (results, calibrated sets)."""
    ev = Evaluation(spec, cfg or EvalConfig(), progress)
    return ev.run(), ev.sets


def _check_golden_source(golden: Path, source_sha256: str) -> None:
    """A given golden model must come from the evaluated model (its build report says so)."""
    import json

    report = golden.parent.parent / "reports" / "build.json"
    if not report.is_file():
        return
    built_from = json.loads(report.read_text()).get("source_sha256")
    if built_from and built_from != source_sha256:
        raise InputError(
            f"{golden} was built from model {built_from[:12]}…, not from the evaluated model "
            f"{source_sha256[:12]}… ({report})")
