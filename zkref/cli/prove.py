"""`zkref prove`: prove one LoRA call — or every module of a peft adapter on one prompt, as one batch proof or one
proof per module — with a backend and write a proof bundle (specs/proof-bundle.md)."""
from __future__ import annotations

import argparse
import json
import platform
import time
from typing import TYPE_CHECKING

from rich.markup import escape

from zkref.cli import inputs
from zkref.cli.console import out, phases, print_json, report
from zkref.lora.quantisation import DeltaCheck
from zkref.pipeline import ProvingMode

if TYPE_CHECKING:
    from backends.base import Backend


def _check_json(check: DeltaCheck) -> dict:
    """The accuracy check recorded in a bundle: dequantised y against the float delta, within the proven bound."""
    return {"max_abs_error": check.max_abs_error, "error_bound": check.error_bound,
            "within_bound": check.within_bound}


def _meta(info: dict, seconds: float, **checks: object) -> dict:
    """A bundle's metadata: where the inputs came from, the Python version, the time taken, the accuracy check(s)."""
    return {"inputs": info, "python": platform.python_version(), "seconds_total": round(seconds, 3)} | checks


def _kind(backend: Backend) -> str:
    """What the backend's proofs are, said plainly (the mock backend's are not zero-knowledge)."""
    return "zero-knowledge proof" if backend.zero_knowledge else "MOCK check (not zero-knowledge)"


def cmd_prove(args: argparse.Namespace) -> int:
    from backends import get_backend
    from backends.bundle import check_target, write_bundle
    from zkref.pipeline import compare

    check_target(args.out)                       # before any work: a bundle is never proven only to be refused
    options = {"srs": args.srs} if args.srs and args.backend == "ezkl" else {}
    if args.srs and args.backend != "ezkl":
        raise ValueError("--srs applies to the ezkl backend only")
    if args.adapter or args.base:
        return _prove_modules(args, get_backend(args.backend, **options))
    if args.proving is not None:
        raise ValueError("--proving chooses how several modules are proven: it needs --base and --adapter")
    backend = get_backend(args.backend, **options)
    prepared, info = inputs.prepared_from_args(args, backend)
    support = backend.supports(prepared.statement)
    if not support:
        raise ValueError(f"backend {backend.name} cannot prove this statement: {support.reason}")
    t0 = time.perf_counter()
    with phases(f"{backend.name}: proving {prepared.statement.shape}", quiet=args.quiet) as progress:
        result = backend.prove(prepared.statement, prepared.witness, progress=progress)   # settings, keys: timed
        anchor = backend.anchor(prepared.statement, prepared.witness)                      # from the cache now
    seconds = time.perf_counter() - t0
    check = compare(prepared, result.public.y_q)
    path = write_bundle(args.out, prepared.statement, result, anchor, _meta(info, seconds, check=_check_json(check)))
    doc = {"bundle": str(path), "backend": backend.name, "zero_knowledge": backend.zero_knowledge,
           "statement_id": prepared.statement.id, "statement": prepared.statement.describe(),
           "timings": result.timings, "proof_bytes": len(result.proof.data), "anchor": anchor.to_json()}
    if args.json:
        print_json(doc)
    else:
        out.print(f"[bold]{escape(prepared.statement.describe())}[/]")
        out.print(f"{backend.name}: {_kind(backend)} written to {path} ({len(result.proof.data):,} B proof, "
                  f"{seconds:.2f} s)")
        out.print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
        out.print(f"publish to verifiers: {json.dumps(anchor.to_json())}")
    return 0


def _prove_modules(args: argparse.Namespace, backend: Backend) -> int:
    """Every selected module of a peft adapter on the call's prompt, proven through `prove_modules` (the measured
    default unless --proving forces it), written as a batch bundle or a per-module bundle."""
    from backends.bundle import ModuleProof, write_batch_bundle, write_modules_bundle
    from zkref.pipeline import Bindings, compare, prepare, prove_modules

    with phases("loading the base model and adapter, calibrating", quiet=args.quiet):
        call = inputs.adapter_call_from_args(args)
    bindings = Bindings(x=args.x_binding, adapter=args.adapter_binding, y=args.y_binding)
    named = [(c.name, prepare(c.quantised, call.captured[c.name].x, bindings)) for c in call.modules]
    t0 = time.perf_counter()
    with phases(f"{backend.name}: proving {len(named)} modules", quiet=args.quiet) as progress:
        proven = prove_modules(named, backend, mode=args.proving or ProvingMode.AUTO, progress=progress)
    seconds = time.perf_counter() - t0
    checks = {name: _check_json(compare(p, proven.y_q[name])) for name, p in named}
    info = {"base": args.base, "adapter": args.adapter, "calibration_ids": list(call.calibration_ids),
            "prompt_ids": list(call.prompt_ids),
            "bindings": {"x": bindings.x.value, "adapter": bindings.adapter.value, "y": bindings.y.value}}
    proving = {"batch": proven.choice.batch, "reason": proven.choice.reason}
    if proven.batch_result is not None:
        result = proven.batch_result
        path = write_batch_bundle(args.out, proven.batch, result, proven.batch_anchor, proven.choice.reason,
                                  _meta(info, seconds, checks=checks))
        proof_bytes, timings = len(result.proof.data), dict(result.timings)
        published: dict = {"anchor": proven.batch_anchor.to_json()}
    else:
        path = write_modules_bundle(args.out, [
            ModuleProof(name, p.statement, m.result, m.anchor,
                        _meta(info | {"module": name}, m.prove_seconds, check=checks[name]))
            for (name, p), m in zip(named, proven.modules)], proven.choice.reason, _meta(info, seconds))
        proof_bytes, timings = sum(len(m.result.proof.data) for m in proven.modules), {}
        published = {"anchors": {name: m.anchor.to_json() for (name, _), m in zip(named, proven.modules)}}
    timings |= {"prove": proven.prove_seconds, "verify": proven.verify_seconds, "total": seconds}
    modules = [{"name": name, "statement_id": p.statement.id, "statement": p.statement.describe(),
                "y_shape": list(proven.y_q[name].shape), "check": checks[name]} for name, p in named]
    doc = {"bundle": str(path), "backend": backend.name, "zero_knowledge": backend.zero_knowledge,
           "proving": proving, "batch_id": proven.batch.id, "modules": modules, "timings": timings,
           "proof_bytes": proof_bytes, "verified": proven.ok} | published
    count = "one batch proof" if proving["batch"] else f"{len(named)} proofs"
    report(doc, args.json, [
        f"[bold]{len(named)} modules of {escape(args.adapter)}, prompt of {len(call.prompt_ids)} tokens[/]",
        f"proving: {escape(proven.choice.reason)}",
        *(f"  {escape(m['name'])}: y {'×'.join(map(str, m['y_shape']))}; {escape(m['statement'])}" for m in modules),
        f"{backend.name}: {_kind(backend)}, {count}, written to {path} ({proof_bytes:,} B, {seconds:.2f} s)",
        "timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()),
        f"publish to verifiers: {escape(json.dumps(published))}",
        *([] if proven.ok else ["[red]the proof(s) did not verify against the values proven: not a valid bundle[/]"])])
    return 0 if proven.ok else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prove", help="prove a LoRA call (or a peft adapter's modules) and write a proof bundle",
        description="Prove one LoRA call — seeded random tensors of the given shapes, or safetensors files — or "
                    "every module of a peft adapter on one prompt, and write a proof bundle "
                    "(specs/proof-bundle.md) that `zkref verify` checks. Exit 0 proven, 1 the proofs did not "
                    "verify, 2 bad input.")
    p.add_argument("--backend", choices=["zkref", "ezkl"], default="ezkl",
                   help="ezkl: a zero-knowledge proof (Halo2/KZG); zkref: the fast mock check (not zero-knowledge)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="bundle directory to create: must not exist or be empty, in an existing directory")
    p.add_argument("--srs", default=None, metavar="FILE",
                   help="ezkl: a ceremony KZG SRS file (default: a development SRS, generated and cached: insecure)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of lines for people")
    inputs.add_arguments(p)
    adapter = inputs.add_adapter_arguments(p)
    adapter.add_argument("--proving", choices=[m.value for m in ProvingMode], default=None,
                         help="one batch proof, one proof per module, or auto (default: one batch where measured to "
                              "win, benchmarks/results/ezkl_batch.md)")
    p.set_defaults(func=cmd_prove)
