"""`zkref serve`: serve a peft LoRA adapter to base-model users over HTTP, every call proven (specs/protocol.md).

Loads the base model and the adapter from local directories, calibrates each module once on the contributor's own
calibration prompt, then serves on HOST:PORT until interrupted. Proofs run in a local process pool (`--workers`), or
as Ray tasks on the cluster at `--ray ADDRESS`.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from zkref.cli.console import err, out
from zkref.cli.inputs import token_ids

TOKEN_ENV = "ZKREF_TOKEN"
MAX_TOKEN_FILE_BYTES = 1 << 20


def quiet_model_loading() -> None:
    """No transformers progress bars or advisory warnings on stderr: the command's own lines stay readable."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def backend_options(backend: str, srs: str | None, cache_dir: str | None) -> dict:
    if backend != "ezkl":
        if srs or cache_dir:
            raise ValueError("--srs and --cache-dir apply to the ezkl backend only")
        return {}
    options = {}
    if srs:
        if not os.path.isfile(srs):
            raise ValueError(f"--srs {srs}: no such file")
        options["srs"] = os.path.abspath(srs)
    if cache_dir:
        options["cache_dir"] = os.path.abspath(cache_dir)
    return options


def read_token_file(path: str) -> tuple[str, ...]:
    """The bearer tokens in FILE: one per line (blank lines and lines starting with # skipped), each a client."""
    if not os.path.isfile(path):
        raise ValueError(f"--token-file {path}: no such file")
    if os.path.getsize(path) > MAX_TOKEN_FILE_BYTES:
        raise ValueError(f"--token-file {path}: larger than {MAX_TOKEN_FILE_BYTES:,} bytes")
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = [line.strip() for line in f]
        except UnicodeDecodeError:
            raise ValueError(f"--token-file {path}: not UTF-8 text") from None
    tokens = tuple(line for line in lines if line and not line.startswith("#"))
    if not tokens:
        raise ValueError(f"--token-file {path}: no token in it")
    return tokens


def log_to_stderr(*, access: bool) -> None:
    """Connection events (rate-limited) and, with `access`, one line per request (rate-limited) on stderr."""
    from zkref.protocol.http import access_logger, http_logger

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    for logger, level in ((http_logger, logging.WARNING), (access_logger, logging.INFO if access else logging.WARNING)):
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def cmd_serve(args: argparse.Namespace) -> int:
    from zkref.pipeline import Bindings
    from zkref.protocol.contributor import load_contributor
    from zkref.protocol.provers import make_prover
    from zkref.protocol.http import ensure_fd_headroom
    from zkref.protocol.server import ServerConfig, bind_socket, create_app, uvicorn_server

    quiet_model_loading()
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    tokens = read_token_file(args.token_file) if args.token_file else ()
    workers = args.workers if args.workers is not None else (1 if args.backend == "ezkl" else
                                                            max(1, min(4, os.cpu_count() or 1)))
    config = ServerConfig(backend=args.backend, backend_options=backend_options(args.backend, args.srs, args.cache_dir),
                          token=token, tokens=tokens, max_tokens=args.max_tokens, max_queue=args.max_queue,
                          max_concurrent_requests=args.max_concurrent, prove_timeout=args.prove_timeout,
                          result_ttl=args.result_ttl, max_results=args.max_results,
                          max_result_bytes=args.max_result_mb << 20, max_connections=args.max_connections,
                          max_connections_per_ip=args.max_connections_per_ip, header_timeout=args.header_timeout,
                          body_min_rate=args.min_body_rate, max_queue_per_client=args.max_queue_per_client,
                          max_results_per_client=args.max_results_per_client, access_log=not args.quiet)
    ensure_fd_headroom(config.max_connections)
    bindings = Bindings(x=args.x_binding, adapter=args.adapter_binding, y=args.y_binding)
    calibration = token_ids(args.calibration_ids, "--calibration-ids", limit=None) if args.calibration_ids else None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.tokens:
        err.print(f"[yellow]zkref serve: listening on {args.host} without a token: anyone who can reach it can use "
                  f"the adapter (pass --token or set {TOKEN_ENV}; put TLS in front of it)[/]")
    sock = bind_socket(args.host, args.port)
    prover = None
    serving = False
    try:
        err.print("[dim]zkref serve: loading the base model and adapter, calibrating…[/]")
        contributor = load_contributor(base_dir=args.base, adapter_dir=args.adapter, calibration_ids=calibration,
                                       shift=args.shift, per_channel=args.per_channel,
                                       weight_bits=args.weight_bits, max_rel_error=args.max_rel_error,
                                       bindings=bindings)
        prover = make_prover(workers=workers, ray_address=args.ray)
        app = create_app(contributor, config, prover)
        prover.warm_up()
        for served in contributor.modules.values():
            q = served.quantised
            out.print(f"{served.name}: {q.d_in}→{q.d_out} r={q.rank} int{q.weight_bits} scaling={q.scaling:g} "
                      f"shift={q.shift} scale_x={q.scale_x:.4g}")
        host = f"[{args.host}]" if ":" in args.host else args.host
        where = f"Ray at {args.ray}" if args.ray else "local process pool"
        auth = f"bearer ({len(config.tokens)} token(s), each a client)" if config.tokens else "none"
        out.print(f"zkref serve: {len(contributor.modules)} module(s), backend {args.backend}, {workers} worker(s) "
                  f"({where}), auth {auth}")
        print(f"zkref serve: listening on http://{host}:{sock.getsockname()[1]}", flush=True)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: turn both into a normal exit so
        # the prover (process pool, or a Ray instance started here) is shut down below.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        server = uvicorn_server(app)  # checks (and raises if needed) the open-file limit for max_connections
        log_to_stderr(access=config.access_log)
        serving = True
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
    finally:
        if prover is not None:
            prover.shutdown()
        sock.close()
        if serving:
            err.print("[dim]zkref serve: stopped[/]")
    return 0


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(0)


def register(subparsers) -> None:
    from zkref.lora.statement import ActivationBinding, AdapterBinding, OutputBinding

    p = subparsers.add_parser("serve", help="serve a peft LoRA adapter over HTTP, proving every call")
    p.add_argument("--base", required=True, help="base model directory (transformers, safetensors)")
    p.add_argument("--adapter", required=True, help="peft adapter directory (save_pretrained)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port, printed)")
    p.add_argument("--backend", choices=["zkref", "ezkl"], default="ezkl")
    p.add_argument("--token", default=None, help=f"require this bearer token (default: ${TOKEN_ENV} if set)")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="accept every token in FILE, one per line, each a separate client (with --token: both)")
    p.add_argument("--quiet", action="store_true", help="no access log (one rate-limited line per request on stderr)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="prove on Ray: auto, HOST:6379, ray://HOST:10001, or local (a private instance)")
    p.add_argument("--workers", type=int, default=None,
                   help="proofs at once (default: 1 for ezkl, which uses every core; up to 4 for zkref)")
    p.add_argument("--calibration-ids", default=None, help="the calibration prompt as token ids (default: 16 "
                                                           "seeded random ids, published in the manifest)")
    p.add_argument("--shift", type=int, default=None, help="fix every module's requant shift instead of "
                                                           "calibrating it")
    p.add_argument("--weight-bits", type=int, choices=[4, 8], default=4,
                   help="weight precision: int4 (cheapest) or int8 (more accurate, two lookups per product)")
    p.add_argument("--per-channel", action="store_true", help="per-output-channel weight scales (free in-circuit)")
    p.add_argument("--max-rel-error", type=float, default=None,
                   help="instead: per module, the cheapest precision whose delta error on the calibration prompt is "
                        "within this (e.g. 0.05)")
    p.add_argument("--x-binding", choices=[b.value for b in ActivationBinding], default="public")
    p.add_argument("--adapter-binding", choices=[b.value for b in AdapterBinding if b.bound], default="fixed")
    p.add_argument("--y-binding", choices=[b.value for b in OutputBinding], default="public")
    p.add_argument("--srs", default=None, help="ezkl: a ceremony SRS file (default: a development SRS, insecure)")
    p.add_argument("--cache-dir", default=None, help="ezkl: circuit, key and SRS cache (default $ZKREF_CACHE)")
    p.add_argument("--max-tokens", type=int, default=64, help="largest T per call")
    p.add_argument("--max-queue", type=int, default=64, help="proofs queued or running before calls get 429")
    p.add_argument("--max-concurrent", type=int, default=32, help="requests in progress before 429")
    p.add_argument("--max-connections", type=int, default=1024,
                   help="open connections; beyond them new ones are closed at once (the open-file limit is raised to "
                        "twice this if needed)")
    p.add_argument("--max-connections-per-ip", type=int, default=128, help="open connections per peer address")
    p.add_argument("--header-timeout", type=float, default=10.0, help="seconds for a whole request head")
    p.add_argument("--min-body-rate", type=int, default=16 << 10,
                   help="bytes/s a call body must arrive at, after a short grace")
    p.add_argument("--max-queue-per-client", type=int, default=16, help="one client's proofs queued or running")
    p.add_argument("--max-results-per-client", type=int, default=256,
                   help="one client's calls kept (its own oldest finished evicted first)")
    p.add_argument("--prove-timeout", type=float, default=600.0, help="seconds before a proof is failed")
    p.add_argument("--result-ttl", type=float, default=3600.0, help="seconds a finished call's proof is kept")
    p.add_argument("--max-results", type=int, default=1024, help="calls kept (oldest finished evicted first)")
    p.add_argument("--max-result-mb", type=int, default=256, help="MiB of proofs kept (oldest evicted first)")
    p.set_defaults(func=cmd_serve)

