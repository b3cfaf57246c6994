"""Accuracy of proven LoRA deltas per weight precision, on a tiny GPT-2 whose LoRA is trained here for a few steps.

The project generates its own text: token sequences from seeded order-2 Markov chains over the tiny vocabulary
(no download, no tokenizer). The base model is first trained on one chain (a stand-in for pretraining: a randomly
initialised GPT-2 predicts nothing, and a LoRA on it cannot move its tied output head far), saved with
save_pretrained; a LoRA (r=8 on c_attn, c_fc, c_proj) is then trained on another chain with the LM loss, saved with
peft's save_pretrained and loaded back through zkref.models.peft_loading. For each precision the adapter is
quantised with a calibration prompt (shift and activation scale fixed there) and the model is run with every
delta replaced by the statement's dequantised output (zkref.accuracy): per-module delta error, max logit error,
top-1 agreement and perplexity against the float model, on held-out sequences.

Writes benchmarks/results/accuracy.json and accuracy.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
VOCAB = 128


def markov_text(n_sequences: int, length: int, seed: int) -> list[list[int]]:
    """Sequences from a sparse order-2 Markov chain: each (a, b) pair has 3 likely successors."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, VOCAB, (VOCAB, VOCAB, 3))
    probs = np.array([0.6, 0.3, 0.1])
    out = []
    for _ in range(n_sequences):
        seq = list(rng.integers(0, VOCAB, 2))
        while len(seq) < length:
            seq.append(int(successors[seq[-2], seq[-1], rng.choice(3, p=probs)]))
        out.append([int(t) for t in seq])
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


def pretrain_base(base_dir: Path, text: list[list[int]], steps: int, seed: int) -> list[float]:
    """Train every weight of the tiny base model on `text` and save it back in place."""
    import torch
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel.from_pretrained(base_dir)
    losses = _fit(model, model.parameters(), text, steps, 3e-3, 16)
    model.save_pretrained(base_dir)
    return losses


def train_adapter(base_dir: Path, adapter_dir: Path, train: list[list[int]], steps: int, seed: int) -> list[float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel.from_pretrained(base_dir)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_fc", "c_proj"], fan_in_fan_out=True,
                        lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    losses = _fit(peft_model, [p for p in peft_model.parameters() if p.requires_grad], train, steps, 1e-2, 16)
    peft_model.save_pretrained(adapter_dir)
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base-steps", type=int, default=200)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from zkref.accuracy import measure, quantise_adapter
    from zkref.models.peft_loading import load_peft_model
    from zkref.models.tiny_model import build_tiny_gpt2
    from zkref.pipeline import PRECISIONS

    base_text = markov_text(400, 24, args.seed + 1)
    text = markov_text(240, 24, args.seed)
    train, calibration, held_out = text[:200], text[200], text[220:]
    with tempfile.TemporaryDirectory(prefix="zkref-accuracy-") as tmp:
        base, adapter = Path(tmp) / "base", Path(tmp) / "adapter"
        build_tiny_gpt2(base, seed=args.seed, n_layer=2, n_embd=64, vocab_size=VOCAB, n_positions=32)
        t0 = time.perf_counter()
        base_losses = pretrain_base(base, base_text, args.base_steps, args.seed)
        losses = train_adapter(base, adapter, train, args.steps, args.seed)
        t_train = time.perf_counter() - t0
        peft_model, _ = load_peft_model(base, adapter)
        rows = []
        for precision in PRECISIONS:
            q = quantise_adapter(peft_model, calibration, precision)
            acc = measure(peft_model, q, held_out)
            rows.append({"precision": str(precision), "weight_bits": precision.weight_bits,
                         "per_channel": precision.per_channel, "modules": len(q),
                         "delta_relative_error_max": acc.max_module_relative_error,
                         "delta_relative_error_median": float(np.median(list(acc.module_relative_error.values()))),
                         "bound_over_error_median": float(np.median(list(acc.bound_over_error.values()))),
                         "bound_over_error_max": max(acc.bound_over_error.values()),
                         "max_logit_error": acc.max_logit_error, "top1_agreement": acc.top1_agreement,
                         "perplexity_float": acc.perplexity_float, "perplexity_proven": acc.perplexity_proven})
    result = {"machine": {"python": platform.python_version(), "processor": platform.machine()},
              "model": "tiny GPT-2 (2 layers, 64 hidden, vocab 128), LoRA r=8 alpha=16 on c_attn, c_fc, c_proj",
              "training": {"base_steps": args.base_steps, "base_loss_last": float(np.mean(base_losses[-10:])),
                           "steps": args.steps, "seconds": round(t_train, 1), "loss_first": losses[0],
                           "loss_last": float(np.mean(losses[-10:]))},
              "eval": {"sequences": len(held_out), "tokens_each": len(held_out[0]),
                       "calibration_tokens": len(calibration)},
              "precisions": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# Accuracy of proven deltas per weight precision", "",
          f"{result['model']}; base trained {args.base_steps} steps on one generated Markov chain, the LoRA "
          f"{args.steps} steps on another (loss {losses[0]:.2f} → {result['training']['loss_last']:.2f}); "
          f"{len(held_out)} held-out sequences of {len(held_out[0])} tokens; "
          "activation scale and shift fixed from one calibration sequence.", "",
          "| precision | delta rel. error (max / median over modules) | proven bound ÷ observed error (median / max) "
          "| max logit error | top-1 agreement | perplexity float → proven |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        md.append(f"| {r['precision']} | {r['delta_relative_error_max']:.1%} / {r['delta_relative_error_median']:.1%} "
                  f"| {r['bound_over_error_median']:.1f}× / {r['bound_over_error_max']:.1f}× "
                  f"| {r['max_logit_error']:.4f} | {r['top1_agreement']:.1%} | {r['perplexity_float']:.3f} → "
                  f"{r['perplexity_proven']:.3f} |")
    md += ["", "Delta relative error: max over calls of |proven − float delta| ÷ max |float delta|, per module.", ""]
    (RESULTS / "accuracy.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
