"""`zkref report` (costs of dense vs low-rank strategies) and `zkref mock` (build and mock-prove a LoRA circuit).

Registered through `register(subparsers)` (zkref.cli.SUBCOMMAND_MODULES). Exit codes: 0 satisfied / report printed,
1 the circuit is not satisfied, 2 bad input (shapes, NaN/inf, missing keys, unreadable files). Files are read with
safetensors only: nothing is ever unpickled.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from zkref.chips.batched_mac import check_lanes
from zkref.chips.mul_table import A_MAX, A_MIN, W_MAX, W_MIN
from zkref.lora.circuit import STRATEGIES, LoRACircuit
from zkref.primitives.quant import QuantizedLoRA
from zkref.lora.report import PRESETS, build_report


def _console():
    from zkref.cli.main import out

    return out


# ------------------------------------------------------------------------------------------------------------------
# safetensors input
# ------------------------------------------------------------------------------------------------------------------
def load_safetensors(path: str | Path, keys: list[str]) -> list[np.ndarray]:
    """Read float tensors `keys` from a .safetensors file (never unpickles); ValueError on anything unusable."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file")
    arrays: list[np.ndarray] = []
    try:
        with safe_open(str(p), framework="numpy") as f:
            available = sorted(f.keys())
            missing = [k for k in keys if k not in available]
            if missing:
                raise ValueError(f"{p}: missing key(s) {', '.join(missing)}; the file has {', '.join(available) or 'none'}")
            for k in keys:
                try:
                    arrays.append(np.asarray(f.get_tensor(k)))
                except (TypeError, ValueError, SafetensorError):  # e.g. bfloat16, which numpy cannot hold
                    arrays.append(_read_with_torch(p, k))
    except SafetensorError as exc:
        raise ValueError(f"{p}: not a readable safetensors file ({exc})") from None
    for k, arr in zip(keys, arrays):
        if arr.dtype.kind not in "fiu":
            raise ValueError(f"{p}: {k} has dtype {arr.dtype}, expected numbers")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise ValueError(f"{p}: {k} contains NaN or infinity")
    return [a.astype(np.float64) for a in arrays]


def _read_with_torch(path: Path, key: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key).float().numpy()


# ------------------------------------------------------------------------------------------------------------------
# zkref report
# ------------------------------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    """Print the cost comparison for a shape or a preset."""
    report = build_report(d_in=args.d_in, d_out=args.d_out, rank=args.rank, tokens=args.tokens, lanes=args.lanes,
                          preset=args.preset, method=args.method, commitments=args.commitments)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    out = _console()
    out.print(report.rich_table())
    out.print(report.effects_table())
    for note in report.notes:
        out.print(f"- {note}")
    out.print(f"accounted in {report.seconds:.3f} s")
    return 0


# ------------------------------------------------------------------------------------------------------------------
# zkref mock
# ------------------------------------------------------------------------------------------------------------------
def _dim(args: argparse.Namespace, name: str, from_file: int | None) -> int | None:
    given = getattr(args, name)
    if given is not None and from_file is not None and given != from_file:
        raise ValueError(f"--{name.replace('_', '-')} {given} does not match the file's shape ({from_file})")
    return given if given is not None else from_file


def _inputs(args: argparse.Namespace) -> tuple[LoRACircuit, dict]:
    """Build the circuit from files (quantised by zkref.quant) or seeded random integers."""
    A_f = B_f = x_f = None
    if args.weights:
        A_f, B_f = load_safetensors(args.weights, ["lora_A", "lora_B"])
        if A_f.ndim != 2 or B_f.ndim != 2 or B_f.shape[1] != A_f.shape[0]:
            raise ValueError(f"{args.weights}: lora_A must be r×d_in and lora_B d_out×r, got {A_f.shape} and "
                             f"{B_f.shape}")
    if args.activations:
        (x_f,) = load_safetensors(args.activations, ["x"])
        if x_f.ndim == 1:
            x_f = x_f[None, :]
        if x_f.ndim != 2:
            raise ValueError(f"{args.activations}: x must be d_in or T×d_in, got shape {x_f.shape}")
    d_in = _dim(args, "d_in", A_f.shape[1] if A_f is not None else (x_f.shape[1] if x_f is not None else None))
    if A_f is not None and x_f is not None and x_f.shape[1] != A_f.shape[1]:
        raise ValueError(f"x has {x_f.shape[1]} features but lora_A expects d_in = {A_f.shape[1]}")
    d_out = _dim(args, "d_out", B_f.shape[0] if B_f is not None else None)
    rank = _dim(args, "rank", A_f.shape[0] if A_f is not None else None)
    tokens = _dim(args, "tokens", x_f.shape[0] if x_f is not None else None)
    tokens = 1 if tokens is None else tokens
    missing = [n for n, v in (("--d-in", d_in), ("--d-out", d_out), ("--rank", rank)) if v is None]
    if missing:
        raise ValueError(f"give {', '.join(missing)} (or --weights / --activations files to take shapes from)")
    for name, v in (("d_in", d_in), ("d_out", d_out), ("rank", rank), ("tokens", tokens)):
        if v < 1:
            raise ValueError(f"{name} must be positive, got {v}")
    lanes = check_lanes(args.lanes)
    rng = np.random.default_rng(args.seed)
    info: dict = {"weights": "file" if A_f is not None else f"random (seed {args.seed})",
                  "activations": "file" if x_f is not None else f"random (seed {args.seed})"}
    shift = args.shift
    if A_f is not None or x_f is not None:
        A_f = A_f if A_f is not None else rng.standard_normal((rank, d_in)) * 0.02
        B_f = B_f if B_f is not None else rng.standard_normal((d_out, rank)) * 0.02
        x_f = x_f if x_f is not None else rng.standard_normal((tokens, d_in))
        alpha = float(args.alpha) if args.alpha is not None else float(rank)
        q = QuantizedLoRA.from_float(A_f, B_f, alpha, x_f, per_channel=args.per_channel, shift=shift)
        A_q, B_q, x_q, shift = q.A_q, q.B_q, q.quantize_x(x_f), q.shift
        info["quantisation"] = q.summary()
    else:
        A_q = rng.integers(W_MIN, W_MAX + 1, (rank, d_in))
        B_q = rng.integers(W_MIN, W_MAX + 1, (d_out, rank))
        x_q = rng.integers(A_MIN, A_MAX + 1, (tokens, d_in))
    circuit = LoRACircuit(d_in, d_out, rank, tokens, lanes, args.strategy, shift, A_q, B_q, x_q)
    if "quantisation" in info:
        info["quantisation"].update(q.check(x_f, circuit.y_q))
    return circuit, info


def cmd_mock(args: argparse.Namespace) -> int:
    """Build a LoRA circuit, mock-prove it, print the verdict and its accounting."""
    from zkref.plonkish.accounting import cost_of_layout
    from zkref.plonkish.mock_prover import MockProver

    circuit, info = _inputs(args)
    lora = circuit
    if args.commit is not None:
        from zkref.lora.committed import CommittedLoRACircuit

        circuit = CommittedLoRACircuit(lora, args.commit)
    t0 = time.perf_counter()
    public = circuit.public_inputs()
    prover = MockProver(circuit, public)
    t1 = time.perf_counter()
    failures = prover.verify()
    t2 = time.perf_counter()
    cost = cost_of_layout(prover.layout, type(circuit).__name__)
    result = {
        "satisfied": not failures,
        "failure_count": len(failures),
        "failures": [str(f) for f in failures[:20]],
        "d_in": lora.d_in, "d_out": lora.d_out, "rank": lora.rank, "tokens": lora.tokens,
        "lanes": lora.lanes, "strategy": lora.strategy, "shift": lora.shift, "macs": lora.macs,
        "commit": args.commit,
        "k": prover.k, "seconds": {"synthesize": round(t1 - t0, 4), "verify": round(t2 - t1, 4)},
        "inputs": info, "cost": cost.to_dict(),
    }
    if args.json:
        print(json.dumps(result, default=_json_default))
    else:
        out = _console()
        verdict = "[green]satisfied[/]" if not failures else f"[red]{len(failures)} failure(s)[/]"
        out.print(f"[bold]{type(circuit).__name__}[/] {lora.d_in}→{lora.d_out} r={lora.rank} T={lora.tokens} "
                  f"L={lora.lanes} {lora.strategy} shift={lora.shift} k={prover.k}: {verdict} "
                  f"(synthesis {t1 - t0:.3f} s, verify {t2 - t1:.3f} s)")
        for f in failures[:10]:
            out.print(f"  {f}")
        if "quantisation" in info:
            out.print(f"quantisation: {json.dumps(info['quantisation'], default=_json_default)}")
        out.print(cost.rich_table())
    return 0 if not failures else 1


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def register(subparsers) -> None:
    """Add the `report` and `mock` subcommands to the zkref command line."""
    p = subparsers.add_parser("report", help="costs of the dense baseline vs low-rank LoRA circuits, side by side")
    p.add_argument("--d-in", type=int, default=None)
    p.add_argument("--d-out", type=int, default=None)
    p.add_argument("--rank", type=int, default=16, help="LoRA rank r (8, 16, 32, 64 are the usual ones)")
    p.add_argument("--tokens", type=int, default=1)
    p.add_argument("--lanes", type=int, default=8, help="lookup lanes per row, 1..16")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="named shape or whole model")
    p.add_argument("--method", choices=["auto", "analytic", "formula"], default="auto",
                   help="analytic layout pass, closed-form formula, or auto (formula only for huge layouts)")
    p.add_argument("--commitments", action="store_true",
                   help="also cost binding x and the adapter by Poseidon commitments (plain and packed)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("mock", help="build a LoRA circuit and mock-prove it")
    p.add_argument("--d-in", type=int, default=None)
    p.add_argument("--d-out", type=int, default=None)
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--tokens", type=int, default=None)
    p.add_argument("--lanes", type=int, default=8)
    p.add_argument("--strategy", choices=list(STRATEGIES), default="table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift", type=int, default=None, help="requant shift (default: calibrated)")
    p.add_argument("--weights", default=None, help="safetensors file with float lora_A (r×d_in), lora_B (d_out×r)")
    p.add_argument("--activations", default=None, help="safetensors file with float x (T×d_in or d_in)")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (scale s = alpha/r; default r)")
    p.add_argument("--per-channel", action="store_true", help="per-output-channel weight scales (zkref.quant)")
    p.add_argument("--commit", choices=["plain", "packed"], default=None,
                   help="make x private and bind x and the adapter by Poseidon commitments (public digests)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_mock)
