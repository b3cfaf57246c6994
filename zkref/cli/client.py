"""`zkref client`: run your base model with adapters served by contributors, verify every call's proof.

Exit 0 when every call's proof verified (or, with --float, after the unverified float run), 1 when any did not
(each failure is named by module and call), 2 on bad input (including a contributor that cannot be used).
"""
from __future__ import annotations

import argparse
import os

from zkref.cli.console import err, out, print_json, quiet_model_loading
from zkref.cli.inputs import token_ids
from zkref.cli.options import integer, positive
from zkref.cli.serve import TOKEN_ENV
from zkref.primitives.ranges import MAX_TOKENS


def cmd_client(args: argparse.Namespace) -> int:
    from zkref.protocol.client import BaseModelClient, tokenize

    quiet_model_loading()
    if args.prompt is not None and args.prompt_ids is not None:
        raise ValueError("give --prompt or --prompt-ids, not both")
    if args.prompt is None and args.prompt_ids is None:
        raise ValueError("give --prompt TEXT or --prompt-ids 1,2,3")
    if args.float and not args.reference_adapter:
        raise ValueError("--float runs the float peft model: it needs --reference-adapter DIR")
    if not args.float and not args.contributor:
        raise ValueError("give at least one --contributor URL (or --float with --reference-adapter)")
    ids = token_ids(args.prompt_ids, "--prompt-ids", limit=None) if args.prompt_ids is not None else \
        tokenize(args.base, args.prompt)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    if args.save_anchors and args.anchors:
        raise ValueError("--save-anchors records a commitment pinned on first use; --anchors already pins one")
    with BaseModelClient(base_dir=args.base, contributors=args.contributor or (), token=token,
                         use_optimization=not args.float, reference_adapters=args.reference_adapter or (),
                         srs=args.srs, cache_dir=args.cache_dir, timeout=args.timeout,
                         proof_timeout=args.proof_timeout, anchors=args.anchors or ()) as client:
        if args.save_anchors and not args.float:
            saved = client.save_commitments(args.save_anchors)
            err.print(f"[dim]zkref client: commitment {saved[0]} saved to {args.save_anchors} (pin it next time with "
                      f"--anchors)[/]")
        result = client.generate(ids, args.generate)
    if args.json:
        print_json(result.to_json())
    else:
        out.print(f"[bold]{result.label}[/] ({len(ids)} tokens, logits {result.logits.shape[0]}×"
                  f"{result.logits.shape[1]})")
        if result.generated_ids:
            t = result.timings
            out.print(f"  generated {len(result.generated_ids)} tokens: {list(result.generated_ids)}; forward "
                      f"{t['forward']:.2f} s, then {t['verify']:.2f} s until every proof verified: "
                      f"{t['tokens_per_second']:.3g} tokens/s proven and verified")
        for c in result.contributors:
            how = "pinned from --anchors" if c["commitment_pinned"] == "file" else "pinned on first use"
            out.print(f"  {c['url']}: adapter commitment {c['commitment_id'][:16]}… ({how})")
        for c in result.calls:
            mark = "[green]verified[/]" if c.verified else "[red]NOT verified[/]"
            out.print(f"  {c.label} ({c.contributor}, call id {c.call_id}): {mark} — {c.reason}")
        if result.accuracy is not None:
            a = result.accuracy
            for mod in a.modules:
                out.print(f"  accuracy {mod.module}: relative error of the delta {mod.relative_error:.2%}")
            out.print(f"  accuracy overall: max logit error {a.max_logit_error:.4g}, top-1 agreement "
                      f"{a.top1_agreement:.0%} (against {a.reference})")
        for w in result.warnings:
            out.print(f"  [yellow]warning: {w}[/]")
        out.print(f"  next-token argmax: {result.logits.argmax(axis=-1).tolist()}")
    if args.float:
        return 0
    return 0 if result.verified else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "client", help="run a base model with contributors' adapters, verifying each call",
        description="Run your base model with the adapters contributors serve: each adapted module's activations go "
                    "to its contributor, the returned delta is added, and every call's proof is fetched and verified "
                    "against what was sent and received. Exit 0 every call verified, 1 not, 2 bad input.")
    p.add_argument("--base", required=True, metavar="DIR", help="your base model directory (transformers, safetensors)")
    p.add_argument("--contributor", action="append", default=None, metavar="URL",
                   help="a contributor's URL (repeat for several; each serves some modules)")
    p.add_argument("--prompt", default=None, help="prompt text (needs a tokenizer in --base)")
    p.add_argument("--prompt-ids", default=None, metavar="IDS", help="prompt as token ids, e.g. 1,2,3")
    p.add_argument("--token", default=None, help=f"bearer token for every contributor (default: ${TOKEN_ENV})")
    p.add_argument("--anchors", action="append", default=None, metavar="FILE",
                   help="an adapter commitment the contributor published earlier (repeat for several contributors): "
                        "a contributor whose commitment is none of them is refused (default: pinned on first use)")
    p.add_argument("--save-anchors", default=None, metavar="FILE",
                   help="write the contributor's commitment, pinned on first use, to FILE for --anchors next time")
    p.add_argument("--generate", type=integer(0, MAX_TOKENS), default=0, metavar="N",
                   help="generate N tokens greedily after the prompt (every call of every step proven and verified)")
    p.add_argument("--json", action="store_true", help="one JSON document: logits, verified, calls, accuracy")
    p.add_argument("--reference-adapter", action="append", default=None, metavar="DIR",
                   help="EVALUATION ONLY: the adapter(s) held locally, for the accuracy against the float peft "
                        "model (a real client does not have them)")
    p.add_argument("--float", action="store_true",
                   help="run the float peft model with --reference-adapter instead (no contributor; UNVERIFIED)")
    p.add_argument("--srs", default=None, metavar="FILE",
                   help="ezkl: the SRS to verify with (default: the local cache's)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="ezkl: cache holding the SRS (default: $ZKREF_CACHE or ~/.cache/zkref)")
    p.add_argument("--timeout", type=positive(), default=60.0, metavar="SECONDS", help="seconds per HTTP request")
    p.add_argument("--proof-timeout", type=positive(), default=900.0, metavar="SECONDS",
                   help="seconds to wait for every proof after the last forward pass")
    p.set_defaults(func=cmd_client)
