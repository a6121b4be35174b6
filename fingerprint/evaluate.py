"""The fidelity table: every fingerprint method against benign variants, attacks and faults.

Methods are the three intrinsic-example algorithms, the boundary tier and the baselines, all
at the same vector budget. Every set except the strict boundary tier gets the threshold of
`calibrate` (the worst held-out benign variant's lower bound, checked against independent
models with seeds 1001 and 1002 and the set's impostors); the rows below are held out from
that calibration: the table's swaps use
seeds 1, 2, 3, its PTQ, pruning and BN-folding variants use other widths, fractions or
fine-tunes than the calibration's (rows that a family did see are marked).

Rows: model variants (float/Brevitas: PTQ, QAT, pruning + fine-tune, BN folding; swaps,
transfer, fine-tunes on shifted and on original + shifted data, weak and strong backdoors,
extraction from natural and from noise inputs, impostors trained on each set's own vectors)
and deployed-model variants (the FINN golden model,
stuck-at-zero neurons, random and targeted bit flips of its memories). A verdict per row and
method is PASS, FAIL or MARGINAL (a pass whose interval straddles the threshold). The
boundary tier is strict: any label other than the deployed model's fails, so it flags every
model variant by design; its false alarms are counted on the unmodified deployed model,
checked repeatedly in random order.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fpgaprint.core import scores
from fpgaprint.core.cluster import Cluster
from fpgaprint.core.errors import FpgaprintError, InputError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.grid import InputGrid
from fpgaprint.core.progress import Progress
from fpgaprint.core.words import random_flips
from fpgaprint.fingerprint import baselines, bitflips, impostor, variants
from fpgaprint.fingerprint.boundary import generation_flips
from fpgaprint.fingerprint.calibrate import (
    MAX_LOSS,
    Sides,
    build_sides,
    check_golden_source,
    dataset_for,
    place_threshold,
)
from fpgaprint.fingerprint.check import judge
from fpgaprint.fingerprint.fanout import Runner
from fpgaprint.fingerprint.generate import INTRINSIC, GenParams, generate
from fpgaprint.fingerprint.intexec import executor, flipped_memories
from fpgaprint.fingerprint.perturb import PerturbConfig
from fpgaprint.fingerprint.source import Model, load_model

__all__ = ["EvalConfig", "dataset_for", "evaluate", "held_out_singles", "in_family", "summarize"]

STRONG_BACKDOOR = 0.985  # attack success from which a backdoor counts as strong
# the table's impostors: the calibration's learners retrained on another fold split and seed,
# and a 1-nearest-neighbour learner the calibration never uses
EVAL_IMPOSTOR_SEED = 17


@dataclass
class EvalConfig:
    count: int = 100
    seed: int = 0
    methods: tuple[str, ...] = INTRINSIC + ("boundary",) + baselines.BASELINES
    ptq_bits: tuple[int, ...] = (8, 6, 4, 3)
    qat_bits: tuple[int, ...] = (4, 2)
    prune_fractions: tuple[float, ...] = (0.5, 0.7, 0.9)
    swap_seeds: tuple[int, ...] = (1, 2, 3)
    epochs: int = 5
    stuck_neurons: tuple[int, ...] = (1, 4)
    stuck_seeds: int = 5
    repeat_checks: int = 20
    flip_counts: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    flip_seeds: int = 20
    single_flip_seeds: int = 400
    pbs_flips: int = 10
    pbs_seeds: int = 3
    pool_noise: int = 500
    natural_draws: int = 10  # draws of natural samples for the single-flip baseline
    build: bool = True
    build_dir: str | None = None
    golden: str | None = None  # an existing golden.onnx of this model: no build
    attack_epochs: int | None = None  # calibration's independent models (None: the recipe's)

    @classmethod
    def quick(cls) -> "EvalConfig":
        return cls(count=40, ptq_bits=(8, 3), qat_bits=(4,), prune_fractions=(0.7,),
                   swap_seeds=(1,), epochs=2, stuck_neurons=(1,), stuck_seeds=2,
                   repeat_checks=3, flip_counts=(1, 16, 256), flip_seeds=3,
                   single_flip_seeds=20, pbs_flips=3, pbs_seeds=1, pool_noise=100,
                   natural_draws=3)


def in_family(spec: dict, params: GenParams) -> str | None:
    """Which generation or selection family draws a variant like `spec`, if any."""
    fams: dict[str, PerturbConfig] = {"generation": params.perturb, "survival": params.survival}
    return next((name for name, f in fams.items() if f.covers(spec)), None)


class Evaluation:
    def __init__(self, spec, cfg: EvalConfig, progress: Progress | None = None,
                 cluster: Cluster | None = None):
        self.cfg = cfg
        self.progress = progress or Progress(None)
        self.say = self.progress.log
        self.runner = Runner(cluster, self.say)  # trainings and generations as seeded jobs
        self.spec = spec
        self.src = load_model(spec)
        if self.src.module is None:
            raise InputError(f"{self.src.name}: the fidelity table needs a PyTorch/Brevitas model")
        self.data = dataset_for(self.src, cfg.seed)
        self.grid = InputGrid()
        self.gen_params = GenParams()
        self.sets: dict[str, FingerprintSet] = {}  # calibrated
        self.ref: dict[str, np.ndarray] = {}  # the source's outputs on each set
        self.score_thr: dict[str, float] = {}  # score-level thresholds (calibrated)
        self.rows: list[dict] = []
        self.golden = None
        self.golden_path: Path | None = None
        self.golden_model: Model | None = None
        self.ex = None
        self.sides: Sides | None = None
        self.notes: list[str] = []
        self.seconds: dict[str, float] = {}  # generation time per method
        self.src_acc = float((self.src.predict(self.data.x_test) == self.data.y_test).mean())

    @property
    def methods(self) -> list[str]:
        return list(self.sets)

    # -- golden model ----------------------------------------------------------------------
    def build_golden(self) -> None:
        from fpgaprint.compiler.build import build_model
        from fpgaprint.core.golden import GoldenModel

        spec = self.spec if isinstance(self.spec, str) else None
        if self.cfg.golden:
            path = Path(self.cfg.golden)
            check_golden_source(path, self.src.sha256)
        elif spec is None or not self.cfg.build:
            self.notes.append("finn-golden, boundary and bit flips: no build (model not given "
                              "by name)")
            return
        else:
            out = Path(self.cfg.build_dir or tempfile.mkdtemp(prefix="fpgaprint-eval-")) / "build"
            self.say(f"FINN build of {spec} into {out}")
            res = build_model(spec, out=out, allow_unsigned=True)
            if not res.golden_path.is_file():
                self.notes.append(f"finn-golden: build failed: {res.report.get('error')}")
                return
            path = res.golden_path
        self.golden_path = path
        self.golden = GoldenModel(path)
        self.golden_model = load_model(path)
        self.ex = executor(self.golden)
        if self.ex is None:
            self.notes.append("the golden graph is not supported by the fast executor: deployed-"
                              "model rows run through FINN's execution (slow)")

    # -- methods ---------------------------------------------------------------------------
    def make_sets(self) -> None:
        c, s, src, data = self.cfg.count, self.cfg.seed, self.src, self.data
        makers = {
            **{a: (lambda a=a: generate(src, a, c, seed=s, progress=self.progress))
               for a in INTRINSIC},
            "boundary": lambda: generate(self.golden_model, "boundary", c, seed=s,
                                         progress=self.progress),
            "natural": lambda: baselines.natural(src, data, c, s),
            "noise": lambda: baselines.noise(src, c, s),
            "adversarial": lambda: baselines.adversarial(src, data, c, s),
            "sensitive-samples": lambda: baselines.sensitive_samples(
                src, data, c, s, steps=20 if src.kind == "float" else 5),
        }
        methods = [m for m in self.cfg.methods if m != "boundary" or self.golden_model is not None]
        if len(methods) < len(self.cfg.methods):
            self.notes.append("boundary: no golden model")
        self.say(f"vectors: {', '.join(methods)}")
        # the boundary tier runs on the golden graph here; the others are jobs
        made = dict(zip([m for m in methods if m != "boundary"], self.runner.values(
            [(f"vectors:{m}", makers[m], ()) for m in methods if m != "boundary"])))
        if "boundary" in methods:
            t0 = time.perf_counter()
            made["boundary"] = (makers["boundary"](), time.perf_counter() - t0)
        self.say("calibration sides: held-out benign variants, independent models")
        self.sides = build_sides(src, data, self.golden_path, seed=s,
                                 weight_bits=self.gen_params.weight_bits,
                                 act_bits=self.gen_params.act_bits,
                                 attack_epochs=self.cfg.attack_epochs, say=self.say,
                                 runner=self.runner,
                                 predict_on=[made[m][0].inputs for m in methods])
        if not self.sides.held_out_from([self.gen_params.perturb, self.gen_params.survival]):
            raise InputError("calibration variants overlap the generation families")
        for m in methods:
            fs, secs = made[m]
            self.seconds[m] = round(secs, 3)
            self.ref[m] = src.logits(fs.inputs)
            if m != "boundary":
                thr, report = place_threshold(fs, self.sides)
                if report.get("score"):
                    self.score_thr[m] = report["score"]["threshold"]
                if thr is None:  # no threshold separates the sides: keep a number, flag it
                    b = report["benign"][report["worst_benign"]]["match_rate"]
                    a = report["attack"][report["best_attack"]]["match_rate"]
                    thr = (a + b) / 2
                    report["method"] += f"; threshold {thr:.3f} kept for the table only"
                    self.notes.append(f"{m}: calibration sides overlap ({report['method']})")
                fs = fs.with_threshold(thr, report)
            self.sets[m] = fs

    # -- verdicts ---------------------------------------------------------------------------
    def verdicts(self, name: str, labels: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """Per method: (match rate, verdict) for the labels a variant gives each set."""
        match, verdict = {}, {}
        for m, fs in self.sets.items():
            r = judge(name, "", fs, labels[m])
            match[m], verdict[m] = r.match_rate, r.verdict
        return match, verdict

    def add_row(self, name: str, family: str, benign: bool, labels: dict[str, np.ndarray],
                accuracy: float | None, info: dict | None = None, level: str = "model",
                outputs: dict[str, np.ndarray] | None = None) -> None:
        """One row; with `outputs` (per set), also the score-level statistic per method."""
        match, verdict = self.verdicts(name, labels)
        loss = None if accuracy is None else self.src_acc - accuracy
        score = {m: scores.margin_correlation(self.ref[m], outputs[m], self.sets[m].labels)[0]
                 for m in self.score_thr if outputs is not None and m in outputs}
        self.rows.append({
            "name": name, "family": family, "benign": benign, "level": level,
            "accuracy": accuracy, "accuracy_loss": loss,
            "in_scope": bool(benign and loss is not None and loss <= MAX_LOSS),
            "match": match, "verdict": verdict,
            "detected": {m: v == "FAIL" for m, v in verdict.items()},
            "score": score,
            "score_detected": {m: bool(v < self.score_thr[m]) for m, v in score.items()},
            "info": info or {},
        })

    def model_row(self, name: str, family: str, benign: bool, model: Model,
                  info: dict | None = None) -> None:
        outputs = {m: model.logits(fs.inputs) for m, fs in self.sets.items()}
        labels = {m: o.argmax(1) for m, o in outputs.items()}
        acc = float((model.predict(self.data.x_test) == self.data.y_test).mean())
        self.add_row(name, family, benign, labels, acc, info, outputs=outputs)

    def make_variants(self) -> None:
        cfg, src, data = self.cfg, self.src, self.data
        wb, ab = self.gen_params.weight_bits, self.gen_params.act_bits
        self.model_row("source", "source", True, src)
        jobs: list[tuple[str, str, bool, dict | None, Callable[[], object]]] = []
        if src.kind == "float":
            for b in cfg.ptq_bits:
                jobs.append((f"ptq{b}", "ptq", True,
                             {"kind": "ptq", "weight_bits": b, "act_bits": b},
                             lambda b=b: variants.ptq(src, b, data.x_train[:512])))
            for b in cfg.qat_bits:
                jobs.append((f"qat{b}", "qat", True, None,
                             lambda b=b: variants.qat(src, b, data, epochs=cfg.epochs)))
            jobs.append((f"bnfold-w{wb}a{ab}", "bnfold", True,
                         {"kind": "bnfold", "weight_bits": wb, "act_bits": ab},
                         lambda: variants.bnfold(src, wb, ab, data.x_train[:512])))
        else:
            jobs.append(("qat", "qat", True, None, lambda: variants.qat(src, 0, data, cfg.epochs)))
        for f in cfg.prune_fractions:
            jobs.append((f"prune{round(f * 100)}+ft", "prune+ft", True,
                         {"kind": "prune", "fraction": f, "finetune_epochs": 2 * cfg.epochs},
                         lambda f=f: variants.prune(src, f, data, epochs=2 * cfg.epochs,
                                                    lr=5e-3)))
        if src.zoo:
            for sd in cfg.swap_seeds:
                jobs.append((f"swap-seed{sd}", "swap", False, None,
                             lambda sd=sd: variants.retrained(src.zoo, sd)))
            jobs.append(("extraction", "extraction", False, None,
                         lambda: variants.extraction(src, data, seed=cfg.seed + 7)))
            jobs.append(("extraction-noise", "extraction-noise", False, None,
                         lambda: variants.extraction(src, data, seed=cfg.seed + 8,
                                                     queries="noise")))
        else:
            self.notes.append("swap, extraction: the source is not a zoo model (no recipe)")
        jobs += [
            ("transfer", "transfer", False, None,
             lambda: variants.transfer(src, data, epochs=2 * cfg.epochs)),
            ("finetune-shifted", "finetune-other-data", False, None,
             lambda: variants.shifted_finetune(src, data, epochs=cfg.epochs)),
            ("finetune-mixed", "finetune-original+shifted", False, None,
             lambda: variants.mixed_finetune(src, data, epochs=cfg.epochs)),
            ("backdoor-a", "backdoor", False, None,
             lambda: variants.backdoor(src, data, epochs=cfg.epochs)),
            ("backdoor-b", "backdoor", False, None,
             lambda: variants.backdoor(src, data, epochs=cfg.epochs, lr=2e-3)),
            ("backdoor-c", "backdoor", False, None,
             lambda: variants.backdoor(src, data, rate=0.3, epochs=3 * cfg.epochs, lr=5e-3)),
        ]
        inputs = {m: fs.inputs for m, fs in self.sets.items()}
        outcomes = self.runner.map([(f"variant:{name}", _variant_labels, (build, inputs, data))
                                    for name, _, _, _, build in jobs])
        for (name, family, benign, spec, _), o in zip(jobs, outcomes):
            if o.error is not None:
                if not isinstance(o.error, FpgaprintError):
                    raise o.error
                self.notes.append(f"{name}: {o.error}")
                continue
            outputs, acc, info = o.value[0]
            labels = {m: v.argmax(1) for m, v in outputs.items()}
            if family == "backdoor":  # weak or strong by the measured attack success
                family = ("backdoor-strong" if info["attack_success"] >= STRONG_BACKDOOR
                          else "backdoor-weak")
            if spec is not None:
                info = {**info, "spec": spec}
                seen = in_family(spec, self.gen_params)
                if seen:
                    info["seen_by"] = f"robust/ltrc {seen} family"
            self.add_row(name, family, benign, labels, acc, info, outputs=outputs)
        self.impostor_rows()

    def impostor_rows(self) -> None:
        """Classifiers trained on each set's own vectors (what a board holding the package
        can learn), judged on vectors they did not see (`fingerprint.impostor`)."""
        per: dict[str, dict[str, np.ndarray]] = {}
        for m, fs in self.sets.items():
            fit = impostor.cross_fit(fs.inputs, fs.labels, self.src.num_classes, self.ref[m],
                                     seed=self.cfg.seed + EVAL_IMPOSTOR_SEED,
                                     learners=impostor.IMPOSTORS + ("knn",))
            for name, out in fit.items():
                per.setdefault(name, {})[m] = out
        for name, outputs in per.items():
            self.add_row(f"impostor-{name}", "impostor", False,
                         {m: o.argmax(1) for m, o in outputs.items()}, None,
                         {"trained_on": "the set's own vectors, 10-fold cross-fitted"},
                         outputs=outputs)

    # -- deployed-model rows ---------------------------------------------------------------
    def _golden_labels(self, mems: dict | None = None, stuck: dict | None = None
                       ) -> dict[str, np.ndarray]:
        out = {}
        for m, fs in self.sets.items():
            q = fs.inputs_int.reshape(len(fs), -1)
            if self.ex is not None:
                out[m] = self.ex.run(q, mems, stuck)[2]
            else:
                g = self.golden if mems is None else self.golden.with_memories(mems)
                out[m] = g.run(q)[2]
        return out

    def golden_rows(self) -> None:
        if self.golden is None:
            return
        gm = self.golden_model
        acc = float((gm.predict(self.data.x_test) == self.data.y_test).mean())
        outputs = {m: (self.ex.run(fs.inputs_int.reshape(len(fs), -1))[1]
                       if self.ex is not None else gm.logits(fs.inputs))
                   for m, fs in self.sets.items()}
        self.add_row("finn-golden", "finn-golden", True, self._golden_labels(), acc,
                     {"golden": str(self.golden_path), "note": "also a calibration variant"},
                     level="deployed", outputs=outputs)
        if self.ex is None:
            self.notes.append("stuck-at-zero rows need the fast executor: left out")
            return
        hidden = hidden_neurons(self.ex)
        x_test = self.grid.to_int(self.data.x_test).reshape(len(self.data.x_test), -1)
        for k in self.cfg.stuck_neurons:
            for s in range(self.cfg.stuck_seeds):
                rng = np.random.default_rng([self.cfg.seed, 0x57C, k, s])
                stuck: dict[str, list[int]] = {}
                for _ in range(k):
                    name, width = hidden[int(rng.integers(len(hidden)))]
                    stuck.setdefault(name, []).append(int(rng.integers(width)))
                acc = float((self.ex.run(x_test, stuck=stuck)[2] == self.data.y_test).mean())
                self.add_row(f"stuck0-{k}n-s{s}", f"stuck-at-zero-{k}", False,
                             self._golden_labels(stuck=stuck), acc, {"stuck": stuck},
                             level="deployed")

    def repeated_checks(self) -> dict:
        """The unmodified deployed model, checked `repeat_checks` times in random order with
        random batch sizes through FINN's execution: any non-PASS is a false alarm."""
        if self.golden is None:
            return {}
        out = {}
        rng = np.random.default_rng([self.cfg.seed, 0x20])
        for m, fs in self.sets.items():
            q = fs.inputs_int.reshape(len(fs), -1)
            verdicts = []
            for _ in range(self.cfg.repeat_checks):
                order = rng.permutation(len(fs))
                labels = np.empty(len(fs), np.int64)
                start = 0
                while start < len(fs):
                    size = int(rng.integers(1, 33))
                    idx = order[start:start + size]
                    labels[idx] = self.golden.run(q[idx])[2]
                    start += size
                verdicts.append(judge("deployed", "", fs, labels).verdict)
            out[m] = {"checks": len(verdicts), "not_pass": sum(v != "PASS" for v in verdicts)}
        return out

    # -- bit flips -------------------------------------------------------------------------
    def _flip_record(self, labels_all: np.ndarray, raw_changed: np.ndarray, effective: bool
                     ) -> dict:
        rec = {"label_match": {}, "verdict": {}, "detected_label": {},
               "detected_label_strict": {}, "detected_exact": {}, "effective": effective}
        for m, sl in self._slices.items():
            lab = labels_all[sl]
            r = judge("flip", "", self.sets[m], lab)
            rec["label_match"][m] = r.match_rate
            rec["verdict"][m] = r.verdict
            rec["detected_label"][m] = r.verdict == "FAIL"
            rec["detected_label_strict"][m] = bool((lab != self._ref_labels[sl]).any())
            rec["detected_exact"][m] = bool(raw_changed[sl].any())
        return rec

    def _run_flipped(self, flips: list) -> tuple[np.ndarray, np.ndarray, bool]:
        """Labels and raw-change flags on every set's inputs, and whether any pool output
        changes (the flip is effective at all)."""
        if self.ex is not None:
            mems = flipped_memories(self.golden.memories(), flips)
            raw, _, labels = self.ex.run(self._all_q, mems)
            eff = bool((self.ex.run(self._pool, mems)[0] != self._pool_raw).any())
        else:
            g = self.golden.flipped(flips)
            raw, _, labels = g.run(self._all_q)
            eff = bool((g.run(self._pool)[0] != self._pool_raw).any())
        return labels, (raw != self._ref_raw).any(1), eff

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
        run = self.ex or g
        self._ref_raw, _, self._ref_labels = run.run(self._all_q)
        rng = np.random.default_rng(cfg.seed)
        self._pool = np.concatenate([
            self.grid.to_int(self.data.x_test).reshape(len(self.data.x_test), -1),
            rng.integers(0, self.grid.qmax + 1, (cfg.pool_noise, self._all_q.shape[1])),
        ])
        self._pool_raw = run.run(self._pool)[0]
        mems = g.memories()
        out: dict = {"random": [], "single_weight": [], "targeted": []}
        for n in cfg.flip_counts:
            self.say(f"random bit flips: {n} x {cfg.flip_seeds} seeds")
            for s in range(cfg.flip_seeds):
                flips = random_flips(mems, n, np.random.default_rng([cfg.seed, n, s]))
                out["random"].append({"n": n, "seed": s,
                                      **self._flip_record(*self._run_flipped(flips))})
        self.say(f"single weight-bit flips: {cfg.single_flip_seeds}")
        singles = held_out_singles(g, cfg.single_flip_seeds, cfg.seed,
                                   held_out="boundary" in self.sets)
        if self.ex is not None:
            lab, changed = self.ex.flip_labels(self._all_q, singles, raw=True)
            _, eff = self.ex.flip_labels(self._pool, singles, raw=True)
            for k, f in enumerate(singles):
                out["single_weight"].append({"n": 1, "flip": list(f), **self._flip_record(
                    lab[k], changed[k], bool(eff[k].any()))})
            out["natural_draws"] = self.natural_draws(singles)
        else:
            for f in singles:
                out["single_weight"].append({"n": 1, "flip": list(f),
                                             **self._flip_record(*self._run_flipped([f]))})
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
                labels, changed, eff = self._run_flipped(flips)
                pred = (self.ex.run(x_att, flipped_memories(mems, flips))[2]
                        if self.ex is not None else g.flipped(flips).run(x_att)[2])
                acc = float((pred == self.data.y_test).mean())
                out["targeted"].append({"k": k, "seed": s, "flips": [list(f) for f in flips],
                                        "accuracy": acc,
                                        **self._flip_record(labels, changed, eff)})
        return out

    def natural_draws(self, singles: list) -> list[float]:
        """The natural baseline of single weight-bit flips over `natural_draws` draws of
        held-out samples (the set's size each): per draw, the share of flips that change any
        label (strict)."""
        n = len(self.sets.get("natural", next(iter(self.sets.values()))))
        rates = []
        for d in range(self.cfg.natural_draws):
            pick = baselines.natural_pick(self.data, n, self.cfg.seed + 1000 + d)
            q = self.grid.to_int(self.data.x_test[pick]).reshape(len(pick), -1)
            ref = self.ex.run(q)[2]
            lab = self.ex.flip_labels(q, singles)
            rates.append(float((lab != ref[None]).any(1).mean()))
        return rates

    def run(self) -> dict:
        phases = [("golden model", self.build_golden), ("fingerprint sets", self.make_sets),
                  ("model variants", self.make_variants), ("deployed-model rows",
                                                           self.golden_rows),
                  ("repeated checks", self.repeated_checks), ("bit flips", self.bitflips)]
        done = {}
        with self.progress.task("fidelity table", total=len(phases)) as task:
            for name, phase in phases:
                task.update(detail=name)
                done[name] = phase()
                task.advance(line=False)
        repeated, flips = done["repeated checks"], done["bit flips"]
        sides = self.sides
        return {
            "model": {"name": self.src.name, "kind": self.src.kind, "sha256": self.src.sha256,
                      "input_shape": list(self.src.input_shape), "data": self.data.name,
                      "accuracy": self.src_acc},
            "config": _jsonable(asdict(self.cfg)),
            "generation": self.gen_params.to_dict(),
            "calibration": {
                "benign": {v.name: {"accuracy": v.accuracy, "spec": v.spec}
                           for v in sides.benign},
                "excluded": {v.name: {"accuracy": v.accuracy, "note": v.note}
                             for v in sides.excluded},
                "attack": {v.name: {"accuracy": v.accuracy} for v in sides.attack},
                "skipped": sides.skipped},
            "methods": {m: {"threshold": fs.threshold, "calibration": fs.calibration,
                            "count": len(fs), "min_margin": float(fs.margins.min()),
                            "seconds": self.seconds.get(m)}
                        for m, fs in self.sets.items()},
            "variants": self.rows,
            "repeated_checks": repeated,
            "bitflips": flips,
            "summary": summarize(self.rows, flips, self.methods, repeated),
            "notes": self.notes,
        }


def _rate(xs: list[bool]) -> float | None:
    return float(np.mean(xs)) if xs else None


def summarize(rows: list[dict], flips: dict, methods: list[str], repeated: dict | None = None
              ) -> dict:
    """False alarms per benign family (variants losing at most 5 points), detection per
    attack and fault family, bit-flip curves, and the boundary tier's repeated checks."""
    out: dict = {"false_alarm": {}, "marginal_benign": {}, "detection": {}, "not_pass": {}}
    for r in rows:
        if r["family"] == "source":
            continue
        if r["benign"]:
            if not r["in_scope"]:
                continue
            for key, bad in (("false_alarm", ("FAIL",)), ("marginal_benign", ("MARGINAL",))):
                fam = out[key].setdefault(r["family"], {m: [] for m in methods})
                for m in methods:
                    if m == "boundary" and r["level"] == "model":
                        continue  # strict by design: only the deployed model must pass it
                    fam[m].append(r["verdict"][m] in bad)
        else:
            for key, hit in (("detection", ("FAIL",)), ("not_pass", ("FAIL", "MARGINAL"))):
                fam = out[key].setdefault(r["family"], {m: [] for m in methods})
                for m in methods:
                    fam[m].append(r["verdict"][m] in hit)
    out = {k: {f: {m: _rate(v) for m, v in d.items()} for f, d in fams.items()}
           for k, fams in out.items()}
    out.update(score_summary(rows))
    out["tradeoff"] = tradeoff(rows, methods)
    out["uniqueness"] = uniqueness(rows, methods)
    draws = flips.get("natural_draws")
    if draws:
        out["natural_draws"] = {"rates": draws, "mean": float(np.mean(draws)),
                                "std": float(np.std(draws, ddof=1)) if len(draws) > 1 else 0.0,
                                "min": float(min(draws)), "max": float(max(draws))}
    out["repeated_checks"] = repeated or {}
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


def _benign_in_scope(r: dict) -> bool:
    return r["family"] != "source" and r["benign"] and r["in_scope"]


def score_summary(rows: list[dict]) -> dict:
    """The score-level statistic at its calibrated threshold, alone (``score_``) and as a
    second check beside the label check (``both_``: either fails): false alarms per benign
    family (losing at most 5 points), detection per attack family."""
    out: dict = {k: {} for k in ("score_false_alarm", "score_detection",
                                 "both_false_alarm", "both_detection")}
    for r in rows:
        if r["family"] == "source" or not r.get("score_detected"):
            continue
        if r["benign"] and not r["in_scope"]:
            continue
        kind = "false_alarm" if r["benign"] else "detection"
        for m, hit in r["score_detected"].items():
            out[f"score_{kind}"].setdefault(r["family"], {}).setdefault(m, []).append(hit)
            both = hit or r["verdict"][m] == "FAIL"  # either check fails: FAIL
            out[f"both_{kind}"].setdefault(r["family"], {}).setdefault(m, []).append(both)
    return {k: {f: {m: _rate(v) for m, v in d.items()} for f, d in fams.items()}
            for k, fams in out.items()}


def tradeoff(rows: list[dict], methods: list[str]) -> dict:
    """Detection against false alarms for every threshold, per method and attack family.

    For each statistic (``label``: match rate; ``score``: margin correlation) and method, every
    distinct value of a row is a threshold t (a row fails when its value is below t); the
    curve lists, per t, the share of held-out benign rows (losing at most 5 points) that
    would fail and, per attack family, the share of its rows that would. ``at_zero`` is each
    family's detection at the highest threshold with no false alarm; ``for_full`` the false
    alarms the lowest threshold detecting the whole family costs."""
    ben = [r for r in rows if _benign_in_scope(r)]
    att = [r for r in rows if not r["benign"] and r["level"] == "model"]
    fams = sorted({r["family"] for r in att})
    out: dict = {}
    for stat, key in (("label", "match"), ("score", "score")):
        for m in methods:
            bv = [r[key][m] for r in ben if m in r.get(key, {})]
            if not bv or (stat == "label" and m == "boundary"):
                continue
            av = {f: [r[key][m] for r in att if r["family"] == f and m in r.get(key, {})]
                  for f in fams}
            av = {f: v for f, v in av.items() if v}
            ts = sorted({*bv, *(x for v in av.values() for x in v)})
            ts.append(ts[-1] + 1e-9)
            curve = [{"threshold": t, "false_alarm": float(np.mean([x < t for x in bv])),
                      "detection": {f: float(np.mean([x < t for x in v]))
                                    for f, v in av.items()}} for t in ts]
            zero = min(bv)  # the highest threshold with no false alarm
            out.setdefault(stat, {})[m] = {
                "curve": curve,
                "at_zero": {f: float(np.mean([x < zero for x in v])) for f, v in av.items()},
                "for_full": {f: float(np.mean([x <= max(v) for x in bv]))
                             for f, v in av.items()},
            }
    return out


def uniqueness(rows: list[dict], methods: list[str]) -> dict:
    """The paper's Uniqueness Score per method: robustness minus transferability, here the
    mean match rate of the held-out benign rows losing at most 5 points minus that of the
    independently trained models (swaps)."""
    ben = [r for r in rows if _benign_in_scope(r)]
    swaps = [r for r in rows if r["family"] == "swap"]
    out = {}
    for m in methods:
        if m == "boundary" or not ben or not swaps:
            continue
        rob = float(np.mean([r["match"][m] for r in ben]))
        tra = float(np.mean([r["match"][m] for r in swaps]))
        out[m] = {"robustness": rob, "transferability": tra, "uniqueness": rob - tra}
    return out


def held_out_singles(golden, count: int, seed: int, held_out: bool = True) -> list:
    """The table's `count` single weight-bit flips of `golden`; with `held_out`, drawn apart
    from the boundary tier's generation flips."""
    used = {tuple(f) for f in generation_flips(golden, 600, seed)} if held_out else set()
    mems = golden.memories()
    singles, s = [], 0
    while len(singles) < count:
        f = random_flips(mems, 1, np.random.default_rng([seed, 1, 10**6 + s]),
                         kinds=("weights",))[0]
        s += 1
        if tuple(f) not in used:
            singles.append(f)
    return singles


def _jsonable(d):
    if isinstance(d, dict):
        return {k: _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    return d


def hidden_neurons(ex) -> list[tuple[str, int]]:
    """(layer, neurons) of every thresholded activation after a matrix layer: an MVAU with its
    thresholds, or a standalone Thresholding layer behind an MVAU."""
    out, width = [], None
    for layer in ex.layers:
        if layer.op == "mvau":
            width = int(ex.weights[layer.weights].shape[1])
            if layer.thresholds is not None:
                out.append((layer.name, width))
        elif layer.op == "thr" and width is not None:
            out.append((layer.name, width))
    return out


def _variant_labels(build: Callable[[], object], inputs: dict[str, np.ndarray], data
                    ) -> tuple[dict[str, np.ndarray], float, dict]:
    """Make a variant and run every set's inputs through it (a job: only outputs travel)."""
    made = build()
    model, info = made if isinstance(made, tuple) else (made, {})
    outputs = {m: model.logits(x) for m, x in inputs.items()}
    own = (model.meta or {}).get("test_accuracy")  # a retrained model: its own held-out split
    acc = float(own) if own is not None else float(
        (model.predict(data.x_test) == data.y_test).mean())
    return outputs, acc, info


def evaluate(spec, cfg: EvalConfig | None = None, progress: Progress | None = None,
             cluster: Cluster | None = None) -> tuple[dict, dict[str, FingerprintSet]]:
    """Run the whole evaluation of the model named by `spec`: (results, calibrated sets);
    `progress` shows its phases.

    Trainings (calibration sides, variants) and vector generations are seeded jobs: on
    `cluster` (a `core.cluster.Cluster`) or here, with identical results."""
    ev = Evaluation(spec, cfg or EvalConfig(), progress, cluster)
    return ev.run(), ev.sets

