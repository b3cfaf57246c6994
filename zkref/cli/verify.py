"""`zkref verify DIR`: check a proof bundle — one statement, a batch of modules, or one proof per module; exit 0 all
valid, 1 any invalid, 2 bad input."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape

from zkref.cli.console import report

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.bundle import ModulesBundle

NO_PIN = ("nothing pinned: pass the contributor's published anchor (--anchor FILE; `zkref prove` writes the one it "
          "publishes as anchor.json) or, for a fixed adapter, --vk-hash H; a proof checked only against the key it "
          "carries proves nothing about the adapter")
MAX_ANCHOR_FILE_BYTES = 1 << 20
"""An anchor is a few hundred bytes; a per-module anchor file holds at most one per batch member (64)."""


def _anchor_file(path: Path) -> object:
    """The JSON of an anchor file given with --anchor (one anchor, or module name → anchor)."""
    if not path.is_file() or path.stat().st_size > MAX_ANCHOR_FILE_BYTES:
        raise ValueError(f"{path}: not a readable anchor file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None


def cmd_verify(args: argparse.Namespace) -> int:
    from backends import get_backend
    from backends.base import AdapterAnchor, Verdict
    from backends.bundle import Bundle, ModulesBundle, read_any_bundle
    from zkref.lora.statement import AdapterBinding

    bundle = read_any_bundle(args.bundle)
    backend_name = bundle.backend if isinstance(bundle, ModulesBundle) else bundle.proof.backend
    options = {"srs": args.srs} if args.srs and backend_name == "ezkl" else {}
    backend = get_backend(backend_name, **options)
    anchor_doc = _anchor_file(Path(args.anchor)) if args.anchor else None
    if isinstance(bundle, ModulesBundle):
        return _verify_modules(args, backend, bundle, anchor_doc)
    single = isinstance(bundle, Bundle)
    target = bundle.statement if single else bundle.batch
    binding = (bundle.statement if single else bundle.batch.members[0]).adapter_binding
    if anchor_doc is not None:
        pinned = AdapterAnchor.from_json(anchor_doc)
        if args.vk_hash and args.vk_hash != pinned.vk_hash:
            raise ValueError(f"--vk-hash {args.vk_hash[:16]}… conflicts with the anchor's vk_hash "
                             f"{str(pinned.vk_hash)[:16]}…: pin one verifying key")
    elif args.vk_hash:
        if binding is not AdapterBinding.FIXED:
            raise ValueError(f"--vk-hash pins a verifying key, which binds a fixed adapter only; this bundle's adapter "
                             f"is {binding.value}: pin the contributor's anchor with --anchor FILE")
        pinned = AdapterAnchor(backend=bundle.proof.backend, statement_id=target.id, vk_hash=args.vk_hash)
    else:
        raise ValueError(NO_PIN)
    if args.statement_id and args.statement_id != target.id:
        verdict = Verdict(False, f"bundle proves {'statement' if single else 'batch'} {target.id}, not the expected "
                                 f"{args.statement_id}")
    elif bundle.tampered:
        verdict = Verdict(False, bundle.tampered)
    elif single:
        verdict = backend.verify(bundle.statement, bundle.public, bundle.proof, anchor=pinned)
    else:
        verdict = backend.verify_batch(bundle.batch, bundle.publics, bundle.proof, anchor=pinned)
    doc = {"valid": bool(verdict), "reason": verdict.reason, "backend": bundle.proof.backend,
           "zero_knowledge": bundle.proof.zero_knowledge, "statement_id": target.id,
           "statement": target.describe(), "anchor_pinned": True}
    if not single:
        doc |= {"kind": "batch", "members": list(bundle.batch.names),
                "proving": {"batch": True, "reason": bundle.reason}}
    report(doc, args.json, [f"[bold]{escape(target.describe())}[/]",
                            *([] if single else [f"proving: {escape(bundle.reason)}"]),
                            ("[green]valid[/]" if verdict else "[red]INVALID[/]") + f": {escape(verdict.reason)}"])
    return 0 if verdict else 1


def _verify_modules(args: argparse.Namespace, backend: Backend, bundle: ModulesBundle, anchor_doc: object) -> int:
    """Each module's own proof against its own public values; pinned anchors come as {module name: anchor}."""
    from backends.base import AdapterAnchor, Verdict

    names = bundle.batch.names
    if args.vk_hash:
        raise ValueError("--vk-hash pins one verifying key; a per-module bundle has one per module: pin them with "
                         "--anchor FILE holding {module name: anchor}")
    if anchor_doc is None:
        raise ValueError(NO_PIN)
    if not isinstance(anchor_doc, dict) or set(anchor_doc) != set(names):
        raise ValueError(f"{args.anchor}: a per-module bundle is pinned by an object with one anchor per module "
                         f"({', '.join(names[:3])}{'…' if len(names) > 3 else ''})")
    pinned = {name: AdapterAnchor.from_json(anchor_doc[name]) for name in names}
    results = []
    wrong_id = None
    if args.statement_id and args.statement_id != bundle.batch.id:
        wrong_id = Verdict(False, f"bundle proves the modules {bundle.batch.id}, not the expected {args.statement_id}")
    for name, sub in zip(names, bundle.modules):
        verdict = wrong_id if wrong_id is not None else Verdict(False, sub.tampered) if sub.tampered else \
            backend.verify(sub.statement, sub.public, sub.proof, anchor=pinned[name])
        results.append({"module": name, "valid": bool(verdict), "reason": verdict.reason,
                        "statement_id": sub.statement.id, "statement": sub.statement.describe()})
    valid = all(r["valid"] for r in results)
    invalid = [r for r in results if not r["valid"]]
    reason = "every module's proof verified" if valid else \
        "; ".join(f"module {r['module']}: {r['reason']}" for r in invalid)
    doc = {"valid": valid, "reason": reason, "backend": bundle.backend, "kind": "per-module",
           "zero_knowledge": all(m.proof.zero_knowledge for m in bundle.modules), "statement_id": bundle.batch.id,
           "anchor_pinned": True, "proving": {"batch": False, "reason": bundle.reason},
           "modules": results}
    report(doc, args.json, [
        f"[bold]{len(names)} modules, one proof each {escape(f'[batch id {bundle.batch.id}]')}[/]",
        f"proving: {escape(bundle.reason)}",
        *(f"  {escape(r['module'])}: {'[green]valid[/]' if r['valid'] else '[red]INVALID[/]'}: {escape(r['reason'])}"
          for r in results),
        ("[green]valid[/]" if valid else f"[red]INVALID[/] ({len(invalid)} of {len(results)} modules)")
        + f": {escape(reason)}"])
    return 0 if valid else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="verify a proof bundle (exit 0 valid, 1 invalid, 2 bad input)",
        description="Verify a proof bundle written by `zkref prove` — one statement, a batch of modules, or one "
                    "proof per module — against its statement(s) and public values. Exit 0 valid, 1 invalid (the "
                    "reason is printed), 2 bad input (a missing or malformed bundle).")
    p.add_argument("bundle", metavar="DIR", help="bundle directory written by `zkref prove`")
    p.add_argument("--anchor", default=None,
                   help="the contributor's published adapter anchor (JSON file) to pin (required, or --vk-hash); for "
                        "a per-module bundle an object mapping each module name to its anchor")
    p.add_argument("--vk-hash", default=None,
                   help="pin the verifying key's SHA-256 (a fixed adapter); with --anchor it must equal the anchor's")
    p.add_argument("--statement-id", default=None,
                   help="require the bundle to prove this statement (for several modules: the batch id)")
    p.add_argument("--srs", default=None, metavar="FILE",
                   help="ezkl: the KZG SRS file the proof was made with (default: the local cache's)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_verify)
