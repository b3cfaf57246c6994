"""`zkref mock`: state one LoRA call, mock-check it with zkref's circuit, compare with the float delta, account it."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from zkref.cli import inputs
from zkref.cli.console import err, out, phases, print_json
from zkref.cli.options import WORKERS, integer
from zkref.lora.circuit import LoRALayout, Products
from zkref.primitives.ranges import MAX_LANES


def cmd_mock(args: argparse.Namespace) -> int:
    from backends import get_backend
    from zkref.pipeline import run

    layout = LoRALayout(lanes=args.lanes, products=args.strategy)
    if args.out:
        _check_out(Path(args.out))
    if args.preset:
        return _mock_preset(args, layout)
    if args.adapter or args.base:
        return _mock_adapter(args, layout)
    backend = get_backend("zkref", layout=layout)
    prepared, info = inputs.prepared_from_args(args, backend)
    t0 = time.perf_counter()
    result = run(prepared, backend, layout=layout)
    seconds = time.perf_counter() - t0
    st, verdict, check = prepared.statement, result.proven.verdict, result.check
    doc = {
        "satisfied": bool(verdict), "reason": verdict.reason, "statement": st.canonical(), "statement_id": st.id,
        "lanes": layout.lanes, "strategy": layout.products.value, "shift": st.shift, "macs": st.shape.macs,
        "k": result.cost.k, "seconds": {"prove": round(result.proven.prove_seconds, 4),
                                         "verify": round(result.proven.verify_seconds, 4), "total": round(seconds, 4)},
        "inputs": info,
        "check": {"max_abs_error": check.max_abs_error, "error_bound": check.error_bound,
                  "relative_error": check.relative_error, "within_bound": check.within_bound},
        "cost": result.cost.to_dict(),
    }
    if args.out:
        _write_result(Path(args.out), prepared, result)
        doc["out"] = args.out
    if args.json:
        print_json(doc)
    else:
        verdict_text = "[green]satisfied[/]" if verdict else f"[red]not satisfied[/]: {verdict.reason}"
        out.print(f"[bold]{st.describe()}[/]")
        out.print(f"L={layout.lanes} {layout.products.value}, k={result.cost.k}: {verdict_text} (mock prove "
                  f"{result.proven.prove_seconds:.3f} s, verify {result.proven.verify_seconds:.3f} s)")
        out.print(f"shift {st.shift} ({info['shift']}); dequantised vs float delta: max error {check.max_abs_error:.4g}"
                  f" ≤ proven bound {check.error_bound:.4g}: {'yes' if check.within_bound else 'NO'} "
                  f"(relative {check.relative_error:.2%})")
        out.print(result.cost.rich_table())
    return 0 if verdict else 1


def _mock_preset(args: argparse.Namespace, layout: LoRALayout) -> int:
    """Every module of a named model, seeded random adapter, mock-checked in worker processes with progress."""
    import sys

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from backends import get_backend
    from zkref.lora.presets import PRESETS
    from zkref.lora.statement import LoRAShape, LoRAStatement
    from zkref.pipeline import check_modules
    from zkref.primitives.ranges import MAX_RANK, MAX_TOKENS, check_int

    if args.weights or args.activations or args.d_in or args.d_out:
        raise ValueError("--preset checks a seeded random adapter on every module: give no shapes or files with it")
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    preset = PRESETS[args.preset]
    rank = check_int("rank", args.rank if args.rank is not None else 16, 1, MAX_RANK)
    tokens = check_int("tokens", args.tokens if args.tokens is not None else 1, 1, MAX_TOKENS)
    backend = get_backend("zkref", layout=layout)
    for module in preset.modules:               # each worker proves one module at a time: each must fit
        statement = LoRAStatement(shape=LoRAShape(d_in=module.d_in, d_out=module.d_out, rank=rank, tokens=tokens),
                                  shift=inputs.PROVISIONAL_SHIFT)
        support = backend.supports(statement)
        if not support:
            raise ValueError(f"{module.name}: {support.reason}")
    total = sum(m.count for m in preset.modules)
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not sys.stderr.isatty() and not args.progress) as bar:
        task = bar.add_task(f"mock-checking {preset.name}", total=total)
        checks = check_modules(preset.modules, rank=rank, tokens=tokens, layout=layout, seed=args.seed,
                               workers=args.workers, progress=lambda c: bar.update(task, advance=1))
    seconds = time.perf_counter() - t0
    failed = [c for c in checks if not c.satisfied]
    doc = {"preset": preset.name, "modules": len(checks), "satisfied": not failed, "rank": rank, "tokens": tokens,
           "lanes": layout.lanes, "strategy": layout.products.value, "seconds": round(seconds, 3),
           "max_k": max(c.k for c in checks), "failed": [vars(c) for c in failed],
           "per_module": [vars(c) for c in checks]}
    if args.json:
        print_json(doc)
    else:
        out.print(f"[bold]{preset.description}[/], r={rank}, T={tokens}, L={layout.lanes} {layout.products.value}: "
                  f"{len(checks) - len(failed)}/{len(checks)} modules satisfied in {seconds:.1f} s "
                  f"(k ≤ {doc['max_k']}; seeded random weights, x public, adapter fixed)")
        for c in failed[:10]:
            out.print(f"  [red]{c.name}[/]: {c.reason}")
    return 0 if not failed else 1


def _mock_adapter(args: argparse.Namespace, layout: LoRALayout) -> int:
    """Every LoRA module of a peft adapter (or those named): calibrate once, prove one call, compare with peft."""
    import numpy as np

    from backends import get_backend
    from zkref.pipeline import prepare, run

    with phases("loading the base model and adapter, calibrating", quiet=args.json):
        adapter_call = inputs.adapter_call_from_args(args)
    backend = get_backend("zkref", layout=layout)
    results, all_ok = [], True
    for c in adapter_call.modules:
        call = adapter_call.captured[c.name]
        outcome = run(prepare(c.quantised, call.x), backend, layout=layout)
        delta = c.quantised.dequantize(outcome.proven.y_q, c.quantised.quantize_activations(call.x).scales)
        peft_error = float(np.abs(delta - call.delta).max()) / max(float(np.abs(call.delta).max()), 1e-300)
        ok = bool(outcome.proven.verdict) and outcome.check.within_bound
        all_ok &= ok
        results.append({"module": c.name, "statement_id": outcome.prepared.statement.id,
                        "statement": outcome.prepared.statement.canonical(), "satisfied": bool(outcome.proven.verdict),
                        "reason": outcome.proven.verdict.reason, "scaling": c.module.scaling,
                        "weight_bits": c.quantised.weight_bits, "relative_error_vs_peft": peft_error,
                        "within_bound": outcome.check.within_bound, "k": outcome.cost.k,
                        "public": outcome.proven.result.public.to_json(),
                        "dequantisation": c.quantised.dequantisation.to_json(), "delta": delta.tolist()})
    doc = {"base": args.base, "adapter": args.adapter, "calibration_ids": list(adapter_call.calibration_ids),
           "prompt_ids": list(adapter_call.prompt_ids), "modules": results, "satisfied": all_ok}
    if args.out:
        _write_json(Path(args.out), doc)
    if args.json:
        print_json(doc)
    else:
        for r in results:
            mark = "[green]ok[/]" if r["satisfied"] and r["within_bound"] else f"[red]{r['reason']}[/]"
            out.print(f"{r['module']}: int{r['weight_bits']}, scaling {r['scaling']:g}, k={r['k']}: {mark}; "
                      f"error vs peft's own delta {r['relative_error_vs_peft']:.2%}")
    return 0 if all_ok else 1


def _check_out(path: Path) -> None:
    """--out names a file to write (or replace) in an existing directory: checked before any work."""
    if path.is_dir():
        raise ValueError(f"--out {path} is a directory: give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{path.parent} is not an existing directory: create it first (parents are never created)")


def _write_json(path: Path, doc: dict) -> None:
    """Write atomically (a temporary sibling renamed into place)."""
    _check_out(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def _write_result(path: Path, prepared, result) -> None:
    """What was proven, for a user to use: the statement, the public values, the dequantised delta."""
    doc = {"statement": prepared.statement.canonical() | {"id": prepared.statement.id},
           "public": result.proven.result.public.to_json(),
           "dequantisation": prepared.quantised.dequantisation.to_json(),
           "delta": prepared.quantised.dequantize(result.proven.y_q).tolist(),
           "verdict": {"ok": bool(result.proven.verdict), "reason": result.proven.verdict.reason}}
    _write_json(path, doc)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "mock", help="state a LoRA call and mock-check it with zkref's circuit (not ZK)",
        description="State one LoRA call (seeded random tensors of the given shapes, or safetensors files), "
                    "mock-check it with zkref's PLONKish circuit, compare the dequantised result with the float "
                    "delta within the proven error bound and print the circuit's accounting — or every module of a "
                    "peft adapter, or of a named model (--preset). Exit 0 satisfied, 1 not, 2 bad input.")
    p.add_argument("--lanes", type=integer(1, MAX_LANES), default=8, metavar="L", help="lookup lanes per row")
    p.add_argument("--strategy", choices=[m.value for m in Products], default="table",
                   help="products by the 4096-row table or by a gate")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the statement, public values and dequantised delta (JSON) to FILE, in an existing "
                        "directory")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of lines for people")
    inputs.add_arguments(p)
    inputs.add_adapter_arguments(p)
    preset = p.add_argument_group("or every module of a named model, seeded random adapters")
    preset.add_argument("--preset", default=None, metavar="NAME",
                        help="mock-check a seeded random adapter on every module of NAME (e.g. llama3-8b) at --rank "
                             "(default 16) and --tokens (default 1)")
    preset.add_argument("--workers", type=WORKERS, default=None, metavar="N",
                        help="worker processes for --preset (default: one per CPU)")
    preset.add_argument("--progress", action="store_true",
                        help="show the progress bar even when stderr is not a terminal")
    p.set_defaults(func=cmd_mock)
