"""Threshold calibration: the benign side sets it, the attack side checks it.

The threshold of a fingerprint set comes from the benign side, measured on the set:
variants of the source held out from the generation family (and from the survival family
robust generation keeps examples by): lower weight or activation bit widths, BN folding,
magnitude pruning with a short fine-tune, and the FINN-compiled golden model when given. A
variant losing more than `max_loss` accuracy (5 points) on the evaluator's data is no benign
deployment: it is excluded and reported. The threshold is the one-sided Clopper-Pearson lower
bound of the worst benign variant's match rate at the false-alarm target.

The attack side checks that the threshold separates: at least two independently trained
models (the zoo recipe with seeds the source never used, or models given explicitly), and
the set's impostors (classifiers trained on the set's own vectors, `fingerprint.impostor`).
A threshold that does not reject an independent model is refused (`CalibrationOverlap`,
exit 1, nothing written); one that does not reject an impostor is written with the report
saying so, and whether any threshold could (`no_threshold`). The report also gives the
score-level statistic (`core.scores`) calibrated the same way, and the number of
vectors the measured gap needs (`fingerprint.power`).

The score check (`core.selftest`, ``score``) is kept on the set, with the source model's
outputs on its vectors, only where it separates: at least MIN_SCORE_BENIGN benign variants
were measured at the score level (one variant says nothing of the benign spread), every
independently trained model FAILs it by the pass rule (its interval's upper end below the
threshold) and no benign variant lies below the threshold. Impostors and quiet attacks are
reported, not required: an impostor distilled from the source's outputs imitates its margins
too.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fpgaprint.compiler.data import Dataset, load_digits, upsample_digits
from fpgaprint.core import scores
from fpgaprint.core.errors import FpgaprintError, InputError, VerdictFail
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.selftest import clopper_pearson, score_outcome
from fpgaprint.fingerprint import impostor, power, variants
from fpgaprint.fingerprint.perturb import PerturbConfig
from fpgaprint.fingerprint.source import Model, load_model

ATTACK_SEEDS = (1001, 1002)  # zoo seeds of the attack side; the evaluation's swaps use 1, 2, 3
MAX_LOSS = 0.05  # accuracy a benign variant may lose
FALSE_ALARM = 0.025  # one-sided: the benign lower bound is the pass rule's 95 % interval's
FINETUNE_EPOCHS = 2
PRUNE_FRACTION = 0.5
MIN_SCORE_BENIGN = 2  # benign variants the score check's threshold must come from


class CalibrationOverlap(VerdictFail):
    """No threshold separates the benign side from the attack side (exit 1)."""


@dataclass
class Variant:
    """One model of a side: its spec (for the held-out rule), accuracy and note."""

    name: str
    spec: dict
    model: Model | None = None
    accuracy: float | None = None
    note: str = ""


@dataclass
class Sides:
    """The models a set is calibrated against (built once, reused for every set)."""

    source_accuracy: float
    benign: list[Variant]
    excluded: list[Variant]
    attack: list[Variant]
    skipped: dict[str, str] = field(default_factory=dict)
    data: str = ""
    max_loss: float = MAX_LOSS
    source: Model | None = None  # reference outputs (score level) and the distill impostor

    def held_out_from(self, families: list[PerturbConfig]) -> bool:
        """No benign variant is a draw of any of `families`."""
        return not any(f.covers(v.spec) for v in self.benign + self.excluded for f in families)


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


def golden_model(path: str | Path, model: Model) -> Variant:
    """The FINN-compiled golden model of `model` (its build report must name the source)."""
    path = Path(path)
    check_golden_source(path, model.sha256)
    g = load_model(path)
    if g.kind != "golden":
        raise InputError(f"{path}: not a golden model (no FINN HW layers)")
    return Variant("finn-golden", {"kind": "golden"}, g)


def check_golden_source(golden: Path, source_sha256: str) -> None:
    """A golden model must come from the model it stands for (its build report says so)."""
    import json

    report = golden.parent.parent / "reports" / "build.json"
    if not report.is_file():
        return
    try:
        built_from = json.loads(report.read_text()).get("source_sha256")
    except ValueError as e:
        raise InputError(f"{report}: not valid JSON ({e})") from e
    if built_from and built_from != source_sha256:
        raise InputError(
            f"{golden} was built from model {built_from[:12]}…, not from the evaluated model "
            f"{source_sha256[:12]}… ({report})")


def benign_variants(model: Model, data: Dataset, weight_bits: int = 4, act_bits: int = 4,
                    golden: Variant | None = None, seed: int = 0, runner=None,
                    predict_on: list | None = None) -> tuple[list[Variant], dict[str, str]]:
    """The held-out benign variants that apply to `model`, and those that do not (why).

    `runner` (a `fingerprint.fanout.Runner`) makes them as jobs, each variant standing as its
    labels on `predict_on`; default: here, in order."""
    made: list[Variant] = []
    skipped: dict[str, str] = {}
    calib_x = data.x_train[:512]
    todo: list[tuple[str, dict, object]] = []

    def add(name: str, spec: dict, make) -> None:
        todo.append((name, spec, make))

    if model.kind == "float":
        if weight_bits > 2:
            w = weight_bits - 1
            add(f"ptq-w{w}a{act_bits}", {"kind": "ptq", "weight_bits": w, "act_bits": act_bits},
                lambda: _named(variants.ptq_wa(model, w, act_bits, calib_x),
                               f"ptq-w{w}a{act_bits}"))
        else:
            skipped["lower weight bits"] = f"the build's weights are {weight_bits}-bit already"
        a = act_bits - 1
        if a >= 2:
            add(f"bnfold-w{weight_bits}a{a}",
                {"kind": "bnfold", "weight_bits": weight_bits, "act_bits": a},
                lambda: variants.bnfold(model, weight_bits, a, calib_x))
        else:
            skipped["lower activation bits"] = f"the build's activations are {act_bits}-bit"
    else:
        skipped["lower bit widths"] = f"{model.kind} model: its quantizers fix the widths"
        add("bnfold", {"kind": "bnfold"}, lambda: variants.bnfold(model))
    name = f"prune{round(PRUNE_FRACTION * 100)}+ft{FINETUNE_EPOCHS}"
    add(name, {"kind": "prune", "fraction": PRUNE_FRACTION, "finetune_epochs": FINETUNE_EPOCHS},
        lambda: _named(variants.prune(model, PRUNE_FRACTION, data, epochs=FINETUNE_EPOCHS,
                                      seed=seed + 1), name))
    for (name, spec, _), (model_made, error) in zip(todo, _made(todo, "benign", runner,
                                                               predict_on)):
        if error is None:
            made.append(Variant(name, spec, model_made))
        elif isinstance(error, FpgaprintError):
            skipped[name] = str(error)
        else:
            raise error
    if golden is not None:
        made.append(golden)
    else:
        skipped["finn-golden"] = "no golden model given (--golden BUILD/model/golden.onnx)"
    return made, skipped


def _made(todo: list[tuple], side: str, runner, predict_on: list | None = None
          ) -> list[tuple[object, BaseException | None]]:
    """(model, error) of each maker in `todo` (name first, maker last), here; or, as jobs of
    `runner`, (its `Predictions` on the arrays `predict_on`, error): a model does not travel
    back from a worker (Brevitas modules do not pickle), its labels do."""
    if runner is None:
        out = []
        for item in todo:
            try:
                out.append((item[-1](), None))
            except FpgaprintError as e:
                out.append((None, e))
        return out
    res = runner.map([(f"calibration:{side}:{item[0]}", _predictions,
                       (item[0], item[-1], predict_on or [])) for item in todo])
    return [(None, o.error) if o.error is not None else (o.value[0], None) for o in res]


def _digest(x) -> str:
    import hashlib

    import numpy as np

    a = np.ascontiguousarray(x, dtype=np.float32)
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


class Predictions:
    """A model's outputs (or labels) on fixed input arrays: stands for the model in
    `place_threshold` and `accuracy` (any other input is an error)."""

    def __init__(self, name: str, arrays: list, outputs: list, meta: dict | None = None):
        self.name = name
        self.meta = dict(meta or {})
        self._out = {_digest(x): y for x, y in zip(arrays, outputs)}

    def _get(self, x):
        try:
            return self._out[_digest(x)]
        except KeyError:
            raise InputError(f"{self.name}: no outputs for these inputs (made on a worker for "
                             "other inputs)") from None

    def predict(self, x):
        y = self._get(x)
        return y.argmax(1).astype("int64") if y.ndim == 2 else y

    def logits(self, x):
        y = self._get(x)
        if y.ndim != 2:
            raise InputError(f"{self.name}: only labels were kept for these inputs")
        return y


def _predictions(name: str, make, arrays: list) -> Predictions:
    model = make()
    return Predictions(name, arrays, [model.logits(x) for x in arrays],
                       getattr(model, "meta", None))


def _named(m: Model, name: str) -> Model:
    m.name = name
    return m


def attack_models(model: Model, given: list[str | Path] | None = None,
                  seeds: tuple[int, ...] = ATTACK_SEEDS, epochs: int | None = None,
                  runner=None, predict_on: list | None = None) -> list[Variant]:
    """Independently trained models: the given ones, else the zoo recipe at `seeds` (as
    jobs of `runner` when given)."""
    if given:
        out = []
        for p in given:
            m = load_model(p)
            if m.sha256 == model.sha256:
                raise InputError(f"{p}: is the source model itself, not an independent one")
            out.append(Variant(f"independent:{Path(str(p)).name}", {"kind": "independent"}, m))
        return out
    if not model.zoo:
        raise InputError(
            f"{model.name}: calibration needs at least 2 independently trained models: give "
            "--attack MODEL (twice or more), or use a zoo model (retrained with new seeds)")
    own = int(model.meta.get("seed", 0))
    for s in seeds:
        if s == own:
            raise InputError(f"attack seed {s} is the source model's own seed")
    todo = [(f"independent-seed{s}", functools.partial(_independent, model.zoo, s, epochs))
            for s in seeds]
    out = []
    for (name, _), (m, error) in zip(todo, _made(todo, "attack", runner, predict_on)):
        if error is not None:
            raise error
        out.append(Variant(name, {"kind": "independent", "seed": int(name.rsplit("seed", 1)[1])},
                           m))
    return out


def _independent(zoo_name: str, seed: int, epochs: int | None) -> Model:
    """The zoo recipe trained with `seed`: an independently trained model."""
    from fpgaprint.compiler import zoo
    from fpgaprint.fingerprint.source import from_module

    ckpt = zoo.make(zoo_name, seed=seed, epochs=epochs)
    m = from_module(ckpt.model, ckpt.input_shape, ckpt.num_classes, f"swap(seed={seed})",
                    ckpt.kind, ckpt.zoo)
    m.meta = dict(ckpt.meta)  # its test accuracy is on its own held-out split
    return m


def accuracy(model: Model, data: Dataset) -> float:
    return float((model.predict(data.x_test) == data.y_test).mean())


def build_sides(model: Model, data: Dataset | None = None, golden: str | Path | None = None,
                attack: list[str | Path] | None = None, weight_bits: int = 4, act_bits: int = 4,
                seed: int = 0, max_loss: float = MAX_LOSS, attack_epochs: int | None = None,
                say=None, runner=None, predict_on: list | None = None) -> Sides:
    """Make both sides for `model` (trains the attack side and the fine-tuned variants; as
    jobs of `runner`, a `fingerprint.fanout.Runner`, when given: then each trained model
    stands as its labels on the arrays `predict_on` and on the data's test split)."""
    say = say or (lambda msg: None)
    if model.module is None:
        raise InputError(f"{model.name}: calibration needs the PyTorch/Brevitas source model")
    if len(attack or []) == 1:
        raise InputError("--attack: give at least 2 independently trained models")
    data = data or dataset_for(model, seed)
    src_acc = accuracy(model, data)
    g = golden_model(golden, model) if golden else None
    say("calibration: held-out benign variants")
    if runner is not None:
        predict_on = list(predict_on or []) + [data.x_test]
    made, skipped = benign_variants(model, data, weight_bits, act_bits, g, seed, runner,
                                    predict_on)
    benign, excluded = [], []
    for v in made:
        v.accuracy = accuracy(v.model, data)
        if v.accuracy < src_acc - max_loss:
            v.note = (f"loses {100 * (src_acc - v.accuracy):.1f} accuracy points "
                      f"(> {100 * max_loss:g}): not a benign deployment, excluded")
            excluded.append(v)
        else:
            benign.append(v)
    if not benign:
        raise InputError("calibration: no held-out benign variant applies or keeps its accuracy "
                         f"(skipped: {skipped}; excluded: {[v.name for v in excluded]})")
    say("calibration: independently trained models")
    att = attack_models(model, attack, epochs=attack_epochs, runner=runner,
                        predict_on=predict_on)
    for v in att:
        own = getattr(v.model, "meta", {}).get("test_accuracy")
        if own is not None:  # trained on another split of the data: its own held-out part
            v.accuracy = float(own)
            v.note = "accuracy on its own held-out split"
        else:
            v.accuracy = accuracy(v.model, data)
    return Sides(src_acc, benign, excluded, att, skipped, data.name, max_loss, model)


def place_threshold(fs: FingerprintSet, sides: Sides, false_alarm: float = FALSE_ALARM,
                    impostors: bool = True, embedded: FingerprintSet | None = None,
                    baud: int = power.BAUD) -> tuple[float | None, dict]:
    """(threshold, report) for `fs`: the threshold is the benign side's, checked against the
    attack side; None when it does not reject every independently trained model.

    The threshold is the one-sided Clopper-Pearson lower bound, at 1 - `false_alarm`, of the
    worst benign variant's match rate (at the default 2.5 % it is the lower end of the pass
    rule's 95 % interval, so that variant passes confidently). Independent models, the set's
    impostors (`fingerprint.impostor`) and the score-level statistic are measured the same
    way; the report says which attack the threshold rejects and, if not, whether any
    threshold could (`separates`, `no_threshold`); line times are at `baud`."""
    n = len(fs)
    confidence = 1.0 - 2.0 * false_alarm
    ref = sides.source.logits(fs.inputs) if sides.source is not None else None

    def entry(name: str, outputs, labels, accuracy=None, spec=None, note="") -> dict:
        k = int((np.asarray(labels) == fs.labels).sum())
        lo, hi = clopper_pearson(k, n, confidence)
        e = {"match_rate": k / n, "matches": k, "interval": [lo, hi], "accuracy": accuracy,
             **({"spec": spec} if spec is not None else {}), **({"note": note} if note else {})}
        if ref is not None and outputs is not None:
            r, slo, shi = scores.margin_correlation(ref, outputs, fs.labels, confidence)
            e["score"] = {"value": r, "interval": [slo, shi],
                          "order_agreement": float(scores.order_agreement(ref, outputs).mean())}
        return e

    def rates(vs: list[Variant]) -> dict[str, dict]:
        out = {}
        for v in vs:
            try:
                outputs = v.model.logits(fs.inputs)
            except InputError:  # labels only (made on a worker before outputs were kept)
                outputs = None
            labels = v.model.predict(fs.inputs) if outputs is None else outputs.argmax(1)
            out[v.name] = entry(v.name, outputs, labels, v.accuracy, v.spec, v.note)
        return out

    ben, att, exc = rates(sides.benign), rates(sides.attack), rates(sides.excluded)
    imp = {}
    ncls = sides.source.num_classes if sides.source is not None else int(fs.labels.max()) + 1
    if impostors and embedded is not None:  # a challenge set: what the package gives away
        emb_ref = sides.source.logits(embedded.inputs) if sides.source is not None else None
        fits = impostor.trained_on(embedded.inputs, embedded.labels, ncls, fs.inputs, emb_ref,
                                   seed=fs.seed)
        how = "trained on the embedded set"
    elif impostors:
        fits = impostor.cross_fit(fs.inputs, fs.labels, ncls, ref, seed=fs.seed)
        how = "trained on the set's own vectors"
    else:
        fits = {}
    for name, outputs in fits.items():
        imp[f"impostor-{name}"] = entry(name, outputs, outputs.argmax(1), note=how)
    worst = min(ben, key=lambda k: ben[k]["match_rate"])
    best = max(att, key=lambda k: att[k]["match_rate"])
    b, a = ben[worst], att[best]
    gap = b["match_rate"] - a["match_rate"]
    thr = b["interval"][0]
    attacks = {**att, **imp}
    rejected = {k: bool(e["match_rate"] < thr) for k, e in attacks.items()}
    top = max(attacks, key=lambda k: attacks[k]["match_rate"])
    a_top = attacks[top]["match_rate"]
    not_rej = [k for k, ok in rejected.items() if not ok]
    need = power.vectors_needed(b["match_rate"], a_top, confidence)
    shape = fs.inputs[0].size
    report = {
        "method": "",
        "rule": "benign lower bound",
        "benign": ben, "attack": att, "impostor": imp, "excluded": exc,
        "skipped": dict(sides.skipped),
        "worst_benign": worst, "best_attack": best, "gap": gap,
        "confidence": confidence, "false_alarm": false_alarm, "count": n,
        "confident": bool(b["interval"][0] > a["interval"][1]),
        "rejected": rejected, "not_rejected": not_rej, "separates": not not_rej,
        "no_threshold": bool(b["match_rate"] <= a_top),
        "power": {"against": top, "gap": b["match_rate"] - a_top, "vectors_needed": need,
                  "vectors_needed_independent": power.vectors_needed(
                      b["match_rate"], a["match_rate"], confidence),
                  "cap": power.CAP, "baud": baud,
                  "line_seconds": None if need is None else
                  power.line_seconds(need, shape, ncls, baud),
                  "line_seconds_now": power.line_seconds(n, shape, ncls, baud)},
        "source_accuracy": sides.source_accuracy, "max_loss": sides.max_loss,
        "data": sides.data,
    }
    if ref is not None and (sc := _score_side(ben, attacks)):
        report["score"] = sc
    ci = f"{100 * (1 - false_alarm):g} %"
    head = (f"benign side: threshold {thr:.3f} = the {ci} lower bound of the worst held-out "
            f"benign variant ({worst} {b['match_rate']:.3f}) at N={n}")
    if not_rej:
        why = "; ".join(f"{k} {attacks[k]['match_rate']:.3f}" for k in not_rej)
        if report["no_threshold"]:
            tail = (f"; NO threshold separates the benign side from {top} "
                    f"({a_top:.3f} >= {b['match_rate']:.3f})")
        else:
            tail = ("; a threshold in ({:.3f}, {:.3f}] would, at a higher false-alarm risk, "
                    "with {} vectors to be confident").format(
                        a_top, b["match_rate"], need if need else f"more than {power.CAP}")
        head += f"; does NOT reject {why}{tail}"
    else:
        head += (f"; rejects all {len(attacks)} attacks (best {top} {a_top:.3f}); "
                 f"{need if need else f'more than {power.CAP}'} vectors separate them "
                 "confidently")
    report["method"] = head
    if any(not rejected[k] for k in att):
        return None, report
    return thr, report


def _score_side(ben: dict, attacks: dict) -> dict:
    """The score-level statistic calibrated like the labels: threshold = the lower bound of
    the worst benign variant's margin correlation; which attacks it rejects."""
    ben = {k: e for k, e in ben.items() if "score" in e}
    if not ben:
        return {}
    worst = min(ben, key=lambda k: ben[k]["score"]["value"])
    # rounded down to 4 decimals: the deployed model is often the worst benign variant, and
    # its own check must not turn MARGINAL on the last bits of a float computed another way
    thr = math.floor(ben[worst]["score"]["interval"][0] * 1e4) / 1e4
    rejected = {k: bool(e["score"]["value"] < thr) for k, e in attacks.items() if "score" in e}
    outcome = {k: score_outcome(*e["score"]["interval"], thr)
               for k, e in {**ben, **attacks}.items() if "score" in e}
    return {"statistic": "margin correlation", "threshold": thr, "worst_benign": worst,
            "rejected": rejected, "separates": all(rejected.values()),
            "not_rejected": [k for k, ok in rejected.items() if not ok],
            "outcome": outcome,
            "benign_below": [k for k, e in ben.items() if e["score"]["value"] < thr]}


def keep_score(report: dict) -> tuple[bool, str]:
    """(kept, why): the score check is kept when at least MIN_SCORE_BENIGN benign variants
    were measured, every independently trained model FAILs it and no benign variant is below
    its threshold."""
    sc = report.get("score") or {}
    if not sc:
        return False, "no score-level figures (no source outputs for the benign side)"
    benign = [k for k, e in report.get("benign", {}).items() if "score" in e]
    if len(benign) < MIN_SCORE_BENIGN:
        return False, (f"benign variants measured at the score level: {', '.join(benign)}; "
                       f"at least {MIN_SCORE_BENIGN} are needed to set its threshold (one says "
                       "nothing of the benign spread; --golden adds the compiled model)")
    out = sc.get("outcome", {})
    indep = list(report.get("attack", {}))
    missing = [k for k in indep if k not in out]
    if missing or not indep:
        return False, f"no score-level figures for the independent models {missing or indep}"
    passing = [f"{k} {out[k]}" for k in indep if out[k] != "FAIL"]
    if passing:
        return False, (f"does not reject every independently trained model at threshold "
                       f"{sc['threshold']:.3f} ({'; '.join(passing)})")
    if sc.get("benign_below"):
        return False, f"benign variants below the threshold: {sc['benign_below']}"
    return True, (f"margin correlation threshold {sc['threshold']:.3f} (the lower bound of "
                  f"{sc['worst_benign']}); rejects all {len(indep)} independently trained "
                  "models")


def calibrate_with(fs: FingerprintSet, sides: Sides, false_alarm: float = FALSE_ALARM,
                   embedded: FingerprintSet | None = None, baud: int = power.BAUD,
                   score: bool = True) -> FingerprintSet:
    """A copy of `fs` with its threshold; `CalibrationOverlap` if it does not reject every
    independently trained model. For a challenge set, `embedded` is the package's set: the
    impostors are trained on it (else cross-fitted on `fs` itself). Without `score` the set
    never carries the score check (its figures stay in the report)."""
    if fs.algorithm == "boundary":
        raise InputError("boundary sets are strict (threshold 1.0): nothing to calibrate")
    thr, report = place_threshold(fs, sides, false_alarm, embedded=embedded, baud=baud)
    if thr is None:
        raise CalibrationOverlap(
            f"cannot calibrate: {report['method']} on {len(fs)} {fs.algorithm} vectors; the "
            "threshold does not reject an independently trained model, none written")
    kept, why = keep_score(report) if score else (False, "left out by request (--no-score)")
    report["score_check"] = {"kept": kept, "why": why}
    out = fs.with_threshold(thr, report)
    if kept and sides.source is not None:
        return out.with_score(sides.source.logits(fs.inputs), report["score"]["threshold"])
    return out.with_score(None, None)


def calibrate(fs: FingerprintSet, model: Model, data: Dataset | None = None,
              golden: str | Path | None = None, attack: list[str | Path] | None = None,
              weight_bits: int | None = None, act_bits: int | None = None, seed: int = 0,
              say=None, score: bool = True) -> FingerprintSet:
    """Calibrate `fs` for `model` (widths default to the set's generation widths)."""
    wb = weight_bits or int(fs.params.get("weight_bits", 4))
    ab = act_bits or int(fs.params.get("act_bits", 4))
    sides = build_sides(model, data, golden, attack, wb, ab, seed, say=say)
    return calibrate_with(fs, sides, score=score)
