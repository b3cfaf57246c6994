"""Accuracy of proven LoRA deltas per precision, on two tiny models whose LoRAs are trained here for a few steps, and
the EZKL prove time of the precisions that matter.

Models (nothing downloaded, no tokenizer): a tiny GPT-2 with a LoRA (r=8, alpha=16) on c_attn, c_fc, c_proj, and a
tiny Llama-shaped model (LlamaConfig: grouped-query attention, SwiGLU MLP, RMSNorm) with an rsLoRA (peft
`use_rslora=True`: scaling alpha/√r) on q, k, v, o, gate, up and down projections. The project generates its own
text: token sequences from a seeded Markov chain (each token has 3 successors). Each base model is first trained on
the chain with successor probabilities 0.6/0.3/0.1 (a stand-in for pretraining), saved with save_pretrained; its LoRA
is then trained with the LM loss on the same chain preferring the successors the other way round (0.1/0.3/0.6: what a
fine-tune shifts), saved with peft's save_pretrained and loaded back through zkref.models.peft_loading. For each precision (`zkref.pipeline.
PRECISIONS`: weight width, per-channel weight scales, z_q's width, per-tensor or per-token activation scales) the
adapter is quantised with a calibration prompt (shift and activation scale fixed there) and the model is run with
every delta replaced by the statement's dequantised output (zkref.accuracy): per-module delta error, the proven bound
÷ the observed error (tight and a-priori), max logit error, top-1 agreement and perplexity against the float model,
on held-out sequences.

EZKL: one representative module (GPT-2-small c_attn 768→2304, r=8, 15 tokens, x and y polycommit, adapter fixed,
a seeded random adapter quantised at each precision) is set up and proven at today's int4 and int8 precisions and at
the recommended one, interleaved (A, B, C, A, B, C) in the same run.

Writes benchmarks/results/accuracy.json and accuracy.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).parent / "results"
VOCAB = 128
BASE_PROBS = (0.6, 0.3, 0.1)
LORA_PROBS = (0.1, 0.3, 0.6)
"""The LoRA's text: the base's chain with each token's successors preferred the other way round."""
TARGET_MEDIAN_ERROR = 0.01
TARGET_TOP1 = 0.99
TARGET_BOUND_RATIO = 3.0
EZKL_SHAPE = dict(d_in=768, d_out=2304, rank=8, tokens=15)
"""GPT-2-small c_attn at 15 tokens: the README's headline EZKL module."""


def chain(seed: int) -> np.ndarray:
    """A sparse Markov chain over the vocabulary: each token has 3 possible successors."""
    return np.random.default_rng(seed).integers(0, VOCAB, (VOCAB, 3))


def markov_text(successors: np.ndarray, probs: tuple[float, ...], n_sequences: int, length: int,
                seed: int) -> list[list[int]]:
    """Sequences from the chain, each token's 3 successors drawn with probabilities `probs`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sequences):
        seq = [int(rng.integers(0, VOCAB))]
        while len(seq) < length:
            seq.append(int(successors[seq[-1], rng.choice(3, p=np.asarray(probs))]))
        out.append(seq)
    return out


def _fit(model, params, data: list[list[int]], steps: int, lr: float, batch: int) -> list[float]:
    import torch

    opt = torch.optim.AdamW(params, lr=lr)
    tokens = torch.as_tensor(data)
    losses = []
    model.train()
    for _ in range(steps):
        rows = tokens[torch.randint(0, len(tokens), (batch,))]
        loss = model(input_ids=rows, labels=rows).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


MODELS = {
    "gpt2": dict(
        title="tiny GPT-2 (2 layers, 128 hidden, vocab 128), LoRA r=8 alpha=16 on c_attn, c_fc, c_proj",
        build=lambda d, seed: _build("gpt2", d, seed),
        lora=dict(r=8, lora_alpha=16, target_modules=["c_attn", "c_fc", "c_proj"], fan_in_fan_out=True,
                  lora_dropout=0.0)),
    "llama": dict(
        title="tiny Llama (2 layers, 128 hidden, 256 MLP, 4 query / 2 key-value heads, vocab 128), rsLoRA r=8 "
              "alpha=16 (scaling alpha/√r) on q, k, v, o, gate, up, down",
        build=lambda d, seed: _build("llama", d, seed),
        lora=dict(r=8, lora_alpha=16, use_rslora=True, lora_dropout=0.0,
                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])),
}


def _build(kind: str, base_dir: Path, seed: int) -> None:
    from zkref.models.tiny_model import build_tiny_gpt2, build_tiny_llama

    if kind == "gpt2":
        build_tiny_gpt2(base_dir, seed=seed, n_layer=2, n_embd=128, vocab_size=VOCAB, n_positions=32)
    else:
        build_tiny_llama(base_dir, seed=seed, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64)


def train(kind: str, base: Path, adapter: Path, base_text, train_text, base_steps: int, steps: int,
          seed: int) -> dict:
    """Build and pretrain the base model, then train its LoRA; both saved with save_pretrained."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    spec = MODELS[kind]
    spec["build"](base, seed)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    base_losses = _fit(model, model.parameters(), base_text, base_steps, 3e-3, 16)
    model.save_pretrained(base)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    peft_model = get_peft_model(model, LoraConfig(**spec["lora"]))
    losses = _fit(peft_model, [p for p in peft_model.parameters() if p.requires_grad], train_text, steps, 5e-3, 16)
    peft_model.save_pretrained(adapter)
    return {"base_steps": base_steps, "base_loss_last": float(np.mean(base_losses[-10:])), "steps": steps,
            "loss_first": losses[0], "loss_last": float(np.mean(losses[-10:])),
            "seconds": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------------------------------------------------
# EZKL prove time of the precisions that matter
# ----------------------------------------------------------------------------------------------------------------------

def ezkl_prove_times(precisions: dict[str, object], repeats: int, cache: Path) -> dict:
    """Set up and prove the representative module at each precision, interleaved; prove seconds per run."""
    from backends import get_backend
    from benchmarks.harness import heavy_lock
    from backends.ezkl.cost import predict
    from zkref.pipeline import RANDOM_WEIGHT_STD, Bindings, prepare

    s = EZKL_SHAPE
    rng = np.random.default_rng(7)
    A = rng.standard_normal((s["rank"], s["d_in"])) * RANDOM_WEIGHT_STD
    B = rng.standard_normal((s["d_out"], s["rank"])) * RANDOM_WEIGHT_STD
    x = rng.standard_normal((s["tokens"], s["d_in"]))
    bindings = Bindings(x="polycommit", adapter="fixed", y="polycommit")
    backend = get_backend("ezkl", cache_dir=cache)
    prepared, out = {}, {}
    for label, precision in precisions.items():
        p = prepare(precision.quantise(A, B, scaling=2.0, x_calibration=x), x, bindings)
        with heavy_lock(f"accuracy EZKL setup {label}"):
            t0 = time.perf_counter()
            prep = backend.prepare(p.statement, p.witness)
            setup_s = time.perf_counter() - t0
        prepared[label] = p
        out[label] = {"precision": str(precision), "statement": p.statement.describe(),
                      "predicted_rows": predict(p.statement).rows, "logrows": prep.logrows,
                      "setup_s": round(setup_s, 2), "prove_s": [], "verified": []}
    for _ in range(repeats):
        for label, p in prepared.items():
            with heavy_lock(f"accuracy EZKL prove {label}"):
                t0 = time.perf_counter()
                result = backend.prove(p.statement, p.witness)
                out[label]["prove_s"].append(round(time.perf_counter() - t0, 2))
            out[label]["verified"].append(bool(backend.verify(p.statement, result.public, result.proof,
                                                              anchor=backend.anchor(p.statement, p.witness))))
    return out


# ----------------------------------------------------------------------------------------------------------------------

def measure_model(kind: str, args, tmp: Path) -> dict:
    from zkref.accuracy import measure, quantise_adapter
    from zkref.models.peft_loading import load_peft_model
    from zkref.pipeline import PRECISIONS

    successors = chain(args.seed + 1)
    base_text = markov_text(successors, BASE_PROBS, 1000, 24, args.seed + 1)
    text = markov_text(successors, LORA_PROBS, 240, 24, args.seed)
    train_text, calibration, held_out = text[:200], text[200], text[220:]
    base, adapter = tmp / f"{kind}-base", tmp / f"{kind}-adapter"
    training = train(kind, base, adapter, base_text, train_text, args.base_steps, args.steps, args.seed)
    peft_model, _ = load_peft_model(base, adapter)
    rows = []
    for precision in PRECISIONS:
        q = quantise_adapter(peft_model, calibration, precision)
        acc = measure(peft_model, q, held_out)
        rows.append({"precision": str(precision), "weight_bits": precision.weight_bits,
                     "per_channel": precision.per_channel, "group_size": precision.group_size,
                     "z_bits": precision.z_bits, "x_bits": precision.x_bits,
                     "x_mode": precision.x_mode.value, "modules": len(q),
                     "delta_relative_error_max": acc.max_module_relative_error,
                     "delta_relative_error_median": float(np.median(list(acc.module_relative_error.values()))),
                     "bound_over_error_median": float(np.median(list(acc.bound_over_error.values()))),
                     "bound_over_error_max": max(acc.bound_over_error.values()),
                     "worst_case_bound_over_error_median":
                         float(np.median(list(acc.worst_case_bound_over_error.values()))),
                     "bound_violations": acc.bound_violations,
                     "max_logit_error": acc.max_logit_error, "top1_agreement": acc.top1_agreement,
                     "perplexity_float": acc.perplexity_float, "perplexity_proven": acc.perplexity_proven})
        print(f"{kind}: {rows[-1]['precision']}: median {rows[-1]['delta_relative_error_median']:.2%} "
              f"top-1 {acc.top1_agreement:.1%} bound÷err {rows[-1]['bound_over_error_median']:.2f}", flush=True)
    return {"model": MODELS[kind]["title"], "training": training, "headroom": headroom_effect(peft_model, calibration,
                                                                                         held_out),
            "eval": {"sequences": len(held_out), "tokens_each": len(held_out[0]),
                     "calibration_tokens": len(calibration)},
            "precisions": rows}


def headroom_effect(peft_model, calibration: list[int], held_out: list[list[int]]) -> dict:
    """The calibrated shift's one bit of headroom (`SHIFT_HEADROOM_BITS`) against none, at int8 weights per channel,
    a 16-bit z_q and per-token activations: max and median module delta error, clamped z_q, top-1 agreement."""
    import dataclasses

    from zkref.accuracy import measure
    from zkref.lora.quantisation import ScaleMode
    from zkref.pipeline import Precision, calibrate
    from zkref.primitives.quant import choose_shift

    precision = Precision(8, True, 16, ScaleMode.PER_TOKEN)
    out = {"precision": str(precision)}
    modules = calibrate(peft_model, calibration, precision=precision)
    for label, shift_of in (("one bit (default)", lambda c: c.quantised.shift),
                            ("none", lambda c: choose_shift(c.quantised.quantize_x(c.captured.x) @ c.quantised.A_q.T,
                                                            c.quantised.z_bits))):
        q = {c.name: dataclasses.replace(c.quantised, shift=shift_of(c)) for c in modules}
        acc = measure(peft_model, q, held_out)
        errors = list(acc.module_relative_error.values())
        out[label] = {"delta_relative_error_max": max(errors), "delta_relative_error_median": float(np.median(errors)),
                      "top1_agreement": acc.top1_agreement}
    return out


def recommend(models: dict) -> tuple[object | None, str]:
    """The cheapest precision (EZKL's predicted rows on the representative module; then narrower weights, narrower
    z_q, per-tensor activations) meeting the median-error and top-1 targets on every model, and why."""
    from backends.ezkl.cost import predict
    from zkref.lora.statement import LoRAShape, LoRAStatement
    from zkref.pipeline import PRECISIONS

    def meets(p) -> bool:
        rows = [next(r for r in m["precisions"] if r["precision"] == str(p)) for m in models.values()]
        return all(r["delta_relative_error_median"] <= TARGET_MEDIAN_ERROR and r["top1_agreement"] >= TARGET_TOP1
                   for r in rows)

    good = [p for p in PRECISIONS if meets(p)]
    if not good:
        return None, "no precision meets both targets on every model"

    def rows_of(p) -> int:
        shift = 12 if p.weight_bits == 8 else 8           # representative; the rows barely depend on it
        bits = 12 if p.group_size else p.weight_bits      # group-wise int4 is proven as int12 weights
        st = LoRAStatement(shape=LoRAShape(**EZKL_SHAPE), shift=shift, weight_bits=bits, z_bits=p.z_bits,
                           activation_bits=p.x_bits, x_binding="polycommit", y_binding="polycommit")
        return predict(st).rows

    best = min(good, key=lambda p: (rows_of(p), 12 if p.group_size else p.weight_bits, p.z_bits, p.x_bits,
                                    p.x_mode.value != "per-tensor"))
    return best, (f"{len(good)} of {len(PRECISIONS)} precisions meet ≤ {TARGET_MEDIAN_ERROR:.0%} median delta error "
                  f"and ≥ {TARGET_TOP1:.0%} top-1 on every model; the cheapest by EZKL's predicted rows")


def markdown(result: dict) -> str:
    md = ["# Accuracy of proven deltas per precision", ""]
    for kind, m in result["models"].items():
        t = m["training"]
        md += [f"## {m['model']}", "",
               f"Base trained {t['base_steps']} steps on a generated Markov chain, successors preferred "
               f"{'/'.join(map(str, BASE_PROBS))} (loss {t['base_loss_last']:.2f}; the chain's entropy "
               f"{-sum(p * np.log(p) for p in BASE_PROBS):.2f}), the LoRA {t['steps']} steps on the chain preferring "
               f"them {'/'.join(map(str, LORA_PROBS))} (loss {t['loss_first']:.2f} → {t['loss_last']:.2f}); {m['eval']['sequences']} held-out "
               f"sequences of {m['eval']['tokens_each']} tokens; activation scale and shift fixed from one calibration "
               "sequence.", "",
               "| precision | delta rel. error max / median | bound ÷ observed, median / max (a-priori bound) "
               "| max logit error | top-1 agreement | perplexity float → proven |",
               "|---|---:|---:|---:|---:|---:|"]
        for r in m["precisions"]:
            md.append(f"| {r['precision']} | {r['delta_relative_error_max']:.2%} / "
                      f"{r['delta_relative_error_median']:.2%} | {r['bound_over_error_median']:.2f}× / "
                      f"{r['bound_over_error_max']:.2f}× ({r['worst_case_bound_over_error_median']:.1f}×) "
                      f"| {r['max_logit_error']:.4f} | {r['top1_agreement']:.1%} | {r['perplexity_float']:.3f} → "
                      f"{r['perplexity_proven']:.3f} |")
        h = m["headroom"]
        md += ["", f"The calibrated shift's headroom ({h['precision']}): "
               + "; ".join(f"{k}: delta error max {v['delta_relative_error_max']:.2%}, median "
                           f"{v['delta_relative_error_median']:.2%}, top-1 {v['top1_agreement']:.1%}"
                           for k, v in h.items() if k != "precision") + ".", ""]
    rec = result["recommended"]
    md += ["## Recommended precision and its EZKL prove time", "", rec["why"], ""]
    if rec["precision"]:
        md.append(f"**{rec['precision']}**.")
    ez = result.get("ezkl")
    if ez:
        md += ["", f"EZKL, one module {ez['shape']} (x and y polycommit, adapter fixed; a seeded random adapter at "
                   f"each precision), proven interleaved {ez['repeats']}× in the same run:", "",
               "| precision | statement | predicted rows | k | setup s | prove s, median (each run) | ÷ today int4 "
               "(median) | verified |",
               "|---|---|---:|---:|---:|---|---:|---|"]
        base = float(np.median(ez["runs"]["today int4"]["prove_s"]))
        for label, r in ez["runs"].items():
            med = float(np.median(r["prove_s"]))
            md.append(f"| {label}: {r['precision']} | {r['statement']} | {r['predicted_rows']:,} | {r['logrows']} | "
                      f"{r['setup_s']} | {med:.1f} ({', '.join(str(v) for v in r['prove_s'])}) | {med / base:.2f}× "
                      f"| {all(r['verified'])} |")
        md += ["", "Timings on a shared 2-core machine (other jobs running): compare the interleaved runs, not the "
                   "absolute seconds."]
    md += ["", "Delta relative error: max over calls of |proven − float delta| ÷ max |float delta|, per module (the "
               "float delta in float64 from the module's own matrices). Bound ÷ observed: the largest proven bound "
               "(`QuantizedLoRA.error_bound`) over the largest observed error, per module; in brackets the a-priori "
               "bound (`worst_case_error_bound`, every rounding at its worst).", ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-steps", type=int, default=600)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ezkl-repeats", type=int, default=3, help="interleaved EZKL proves per precision (0: none)")
    ap.add_argument("--cache", default=None, help="EZKL cache directory for keys and the dev SRS (default: a "
                                              "temporary one, removed afterwards: the proving keys are large)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)   # tiny matrices: one thread is faster, and far faster on a shared, busy machine
    from zkref.pipeline import Precision

    with tempfile.TemporaryDirectory(prefix="zkref-accuracy-") as tmp:
        models = {kind: measure_model(kind, args, Path(tmp)) for kind in MODELS}
        best, why = recommend(models)
        result = {"machine": {"python": platform.python_version(), "processor": platform.machine()},
                  "targets": {"median_delta_error": TARGET_MEDIAN_ERROR, "top1": TARGET_TOP1,
                              "bound_over_error": TARGET_BOUND_RATIO},
                  "models": models, "recommended": {"precision": str(best) if best else None, "why": why}}
        if best is not None:
            for kind, m in models.items():
                row = next(r for r in m["precisions"] if r["precision"] == str(best))
                result["recommended"][kind] = {k: row[k] for k in ("delta_relative_error_median", "top1_agreement",
                                                                   "bound_over_error_median", "bound_over_error_max")}
        if args.ezkl_repeats and best is not None:
            precisions = {"today int4": Precision(4, False), "today int8": Precision(8, True), "recommended": best}
            cache = Path(args.cache) / "accuracy" if args.cache else Path(tmp) / "ezkl"
            result["ezkl"] = {"shape": "GPT-2-small c_attn 768→2304 r=8 T=15", "repeats": args.ezkl_repeats,
                              "runs": ezkl_prove_times(precisions, args.ezkl_repeats, cache)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (RESULTS / "accuracy.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
