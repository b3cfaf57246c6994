"""zkref's accounting of its custom-circuit design (MulTable lookups + L lanes + requant + Poseidon), per module:
rows, k and proof-size estimate for each strategy (zkref.lora.report), the rows-vs-lanes curve, the note's own 512×
example, and the model-to-adapter MAC ratio behind the note's "40×". Nothing here is proven or timed except the
accounting itself: these are the "computed" column of the performance tables. Writes results/accounting.{json,md}.

    python benchmarks/bench_accounting.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import RESULTS, Machine, write_results  # noqa: E402

from zkref.lora.report import STRATEGY_SPECS, build_report, strategy_cost  # noqa: E402
from zkref.primitives.ranges import MAX_LANES  # noqa: E402


@dataclass(frozen=True)
class Module:
    """A benchmarked module: preset name in zkref.lora.presets, shape and the rank it is benchmarked at."""

    key: str
    label: str
    preset: str
    d_in: int
    d_out: int
    rank: int


MODULES = (Module("c_attn", "GPT-2-small c_attn 768→2304 r=8", "gpt2-small-c_attn", 768, 2304, 8),
           Module("q_proj", "Llama-3-8B q_proj 4096→4096 r=16", "llama3-8b-q_proj", 4096, 4096, 16))
QUICK_MODULES = (Module("tiny", "tiny 16→24 r=2", "", 16, 24, 2),)
TOKENS = (1, 15)
"""One call (T=1) and the original recipe's batch 3 × sequence 5 (T=15)."""
LANES = tuple(sorted({1, 2, 4, 8, MAX_LANES}))
NOTE_EXAMPLE = (4096, 4096, 4)
"""The design note's own 512× example: d = k = 4096, r = 4."""


@dataclass(frozen=True)
class Architecture:
    """A base model's linear layers per transformer block (d_in, d_out) and block count: what the note's "40×"
    ("full model → LoRA only") compares the adapter with. Attention score products and the LM head are left out (the
    first depends on the context length, the second on the vocabulary): the ratio is a lower bound on the model's MACs."""

    key: str
    label: str
    blocks: int
    linears: tuple[tuple[str, int, int], ...]
    adapted: tuple[str, ...]
    rank: int
    weight_bytes: int
    """Bytes per weight as the model is published (GPT-2: fp32; Llama-3: bf16), for the digest's size."""

    def base_macs_per_token(self) -> int:
        return self.blocks * sum(i * o for _, i, o in self.linears)

    def linear_weight_bytes(self) -> int:
        """Bytes of the linear layers' weights (one MAC per weight per token), what a weight digest reads at least."""
        return self.base_macs_per_token() * self.weight_bytes

    def adapter_macs_per_token(self) -> int:
        return self.blocks * sum(self.rank * (i + o) for n, i, o in self.linears if n in self.adapted)


GPT2_SMALL = (("c_attn", 768, 2304), ("attn.c_proj", 768, 768), ("c_fc", 768, 3072), ("mlp.c_proj", 3072, 768))
LLAMA3_8B = (("q_proj", 4096, 4096), ("k_proj", 4096, 1024), ("v_proj", 4096, 1024), ("o_proj", 4096, 4096),
             ("gate_proj", 4096, 14336), ("up_proj", 4096, 14336), ("down_proj", 14336, 4096))
ARCHITECTURES = (
    Architecture("gpt2-c_attn", "GPT-2-small, LoRA r=8 on c_attn (12 blocks)", 12, GPT2_SMALL, ("c_attn",), 8, 4),
    Architecture("llama3-8b-q_proj", "Llama-3-8B, LoRA r=16 on q_proj (32 blocks)", 32, LLAMA3_8B, ("q_proj",), 16, 2),
    Architecture("llama3-8b-all", "Llama-3-8B, LoRA r=16 on all 7 projections (32 blocks)", 32, LLAMA3_8B,
                 tuple(n for n, _, _ in LLAMA3_8B), 16, 2),
)


def module_reports(modules: tuple[Module, ...], tokens: tuple[int, ...]) -> list[dict]:
    """build_report(commitments=True) per module and T: every strategy's cost and each idea's effect."""
    out = []
    for m in modules:
        for t in tokens:
            rep = build_report(d_in=m.d_in, d_out=m.d_out, rank=m.rank, tokens=t, lanes=8, commitments=True)
            out.append({"module": asdict(m), "tokens": t, "report": rep.to_dict(), "markdown": rep.markdown()})
    return out


def lanes_curve(modules: tuple[Module, ...], tokens: tuple[int, ...]) -> list[dict]:
    """Rows, k and proof bytes of the low-rank MulTable circuit for every lane count (the rows-vs-lanes plot)."""
    spec = next(s for s in STRATEGY_SPECS if s.key == "lowrank-table")
    out = []
    for m in modules:
        for t in tokens:
            for lanes in LANES:
                c = strategy_cost(spec, m.d_in, m.d_out, m.rank, t, lanes)
                out.append({"module": m.key, "tokens": t, "lanes": lanes, "rows": c.rows, "k": c.k,
                            "proof_bytes": c.proof_bytes, "lookups": c.lookups, "advice_columns": c.advice_columns,
                            "method": c.method})
    return out


def note_example() -> dict:
    """The note's example shape accounted: MACs and rows, dense against low-rank (L = 8)."""
    d_in, d_out, r = NOTE_EXAMPLE
    rep = build_report(d_in=d_in, d_out=d_out, rank=r, tokens=1, lanes=8)
    dense, low = rep.strategies["dense"], rep.strategies["lowrank-table"]
    return {"d_in": d_in, "d_out": d_out, "rank": r, "dense_macs": dense.macs, "lowrank_macs": low.macs,
            "dense_rows": dense.rows, "lowrank_rows": low.rows, "macs_ratio": dense.macs / low.macs,
            "rows_ratio": dense.rows / low.rows}


def architectures() -> list[dict]:
    return [{"key": a.key, "label": a.label, "base_macs_per_token": a.base_macs_per_token(),
             "adapter_macs_per_token": a.adapter_macs_per_token(), "model": a.label.split(",")[0],
             "linear_weight_bytes": a.linear_weight_bytes(),
             "ratio": a.base_macs_per_token() / a.adapter_macs_per_token()} for a in ARCHITECTURES]


def markdown(data: dict) -> str:
    """The accounting tables from accounting.json's content."""
    lines = ["# zkref's accounting of its custom-circuit design", "",
             f"Computed (no proof), {data['meta']['machine']}; accounting took {data['meta']['elapsed_s']:.2f} s. "
             "Strategies: dense ΔW·x; low-rank with products in a gate; low-rank with the 4,096-row multiplication "
             "table and 1 lane; the same with L = 8 lanes; the last with x and the adapter bound by Poseidon as EZKL "
             "hashes (one felt per value) or packed first. Every low-rank strategy includes the requantisation.", ""]
    for entry in data["modules"]:
        m = entry["module"]
        lines += [f"## {m['label']}, T = {entry['tokens']}", "", entry["markdown"], ""]
    lines += ["## Rows against lanes (low-rank, MulTable)", "", "| module | T | " +
              " | ".join(f"L={lanes}" for lanes in data["lanes_values"]) + " |",
              "|---|---:|" + "---:|" * len(data["lanes_values"])]
    keys = sorted({(e["module"], e["tokens"]) for e in data["lanes"]}, key=lambda x: (x[0], x[1]))
    for mod, t in keys:
        cells = [next(e for e in data["lanes"] if e["module"] == mod and e["tokens"] == t and e["lanes"] == lanes)
                 for lanes in data["lanes_values"]]
        lines.append(f"| {mod} | {t} | " + " | ".join(f"{c['rows']:,} (k={c['k']}, {c['proof_bytes']:,} B)"
                                                      for c in cells) + " |")
    ex = data["note_example"]
    lines += ["", f"The note's 512× example ({ex['d_in']}→{ex['d_out']}, r={ex['rank']}, T=1): dense "
                  f"{ex['dense_macs']:,} MACs / {ex['dense_rows']:,} rows, low-rank {ex['lowrank_macs']:,} MACs / "
                  f"{ex['lowrank_rows']:,} rows: {ex['macs_ratio']:,.0f}× fewer MACs, {ex['rows_ratio']:,.0f}× "
                  "fewer rows.", "",
              "## Base model against adapter (the note's 40×)", "",
              "| model and adapter | base-model linear MACs per token | adapter MACs per token | ratio |",
              "|---|---:|---:|---:|"]
    for a in data["architectures"]:
        lines.append(f"| {a['label']} | {a['base_macs_per_token']:,} | {a['adapter_macs_per_token']:,} | "
                     f"{a['ratio']:,.0f}× |")
    lines += ["", "Linear layers of the transformer blocks only (attention scores and the LM head left out)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny module only (smoke test)")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    strategy_cost.cache_clear()
    modules = QUICK_MODULES if args.quick else MODULES
    tokens = (1, 3) if args.quick else TOKENS
    data = {"modules": module_reports(modules, tokens), "lanes": lanes_curve(modules, tokens),
            "lanes_values": list(LANES), "note_example": note_example(), "architectures": architectures()}
    data["meta"] = {"machine": Machine.here().describe(), "elapsed_s": time.perf_counter() - t0, "quick": args.quick}
    write_results(args.results, "accounting", data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
