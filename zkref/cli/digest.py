"""`zkref digest`: the Poseidon digest of a local model's safetensors weights, cached beside the model."""
from __future__ import annotations

import argparse

from zkref.cli.console import out, print_json
from zkref.cli.options import integer
from zkref.models.digest import FORMAT_VERSION, FORMATS
from zkref.models.digest import MAX_WORKERS as MAX_DIGEST_WORKERS


def cmd_digest(args: argparse.Namespace) -> int:
    from zkref.models.digest import model_digest

    result = model_digest(args.model_dir, progress=not args.quiet, use_cache=not args.no_cache, workers=args.workers,
                          format_version=args.format_version)
    if args.json:
        print_json(result.to_json() | {"from_cache": result.from_cache})
    else:
        source = " (from cache)" if result.from_cache else ""
        out.print(f"base-model digest {result.hex}{source}")
        out.print(f"  {result.format_version}: {result.n_tensors} tensors, {result.n_parameters:,} parameters, "
                  f"{result.n_bytes:,} bytes")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "digest", help="Poseidon digest of a local model's safetensors weights (specs/commitments.md)",
        description="The base model's digest: SHA-256 per tensor, combined with names, dtypes and shapes by Poseidon "
                    "into one field element; cached beside the model (zkref-digest.json).")
    p.add_argument("model_dir", metavar="MODEL_DIR",
                   help="directory with *.safetensors files (e.g. from save_pretrained)")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write zkref-digest.json")
    p.add_argument("--workers", type=integer(1, MAX_DIGEST_WORKERS), default=None, metavar="N",
                   help=f"threads for /2, processes for /1 (default: one per CPU, at most {MAX_DIGEST_WORKERS})")
    p.add_argument("--format", dest="format_version", choices=FORMATS, default=FORMAT_VERSION,
                   help="zkref-model-digest/2 (SHA-256 per tensor, then Poseidon) or the old zkref-model-digest/1 "
                        "(Poseidon over every byte, under 1 MB/s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_digest)
