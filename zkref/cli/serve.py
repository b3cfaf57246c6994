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
from pathlib import Path

from zkref.cli.console import err, out, phases, quiet_model_loading
from zkref.cli.inputs import add_binding_arguments, add_precision_arguments, precision_from_args, token_ids
from zkref.cli.options import PORT, WORKERS, integer, positive
from zkref.primitives.ranges import MAX_SHIFT, MAX_TOKENS

TOKEN_ENV = "ZKREF_TOKEN"
MAX_TOKEN_FILE_BYTES = 1 << 20


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
    from zkref.protocol.server import ServerConfig, bind_socket, create_app, publish_commitment, uvicorn_server

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
                          max_results_per_client=args.max_results_per_client, access_log=not args.quiet,
                          token_buckets=token_ids(args.token_buckets, "--token-buckets", limit=None)
                          if args.token_buckets else None,
                          batching=not args.no_batching, batch_window=args.batch_window)
    ensure_fd_headroom(config.max_connections)
    publish = _publish_path(args.publish)
    bindings = Bindings(x=args.x_binding, adapter=args.adapter_binding, y=args.y_binding)
    calibration = token_ids(args.calibration_ids, "--calibration-ids", limit=None) if args.calibration_ids else None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.tokens:
        err.print(f"[yellow]zkref serve: listening on {args.host} without a token: anyone who can reach it can use "
                  f"the adapter (pass --token or set {TOKEN_ENV}; put TLS in front of it)[/]")
    sock = bind_socket(args.host, args.port)
    prover = None
    serving = False
    try:
        with phases("zkref serve", quiet=args.quiet) as phase:
            phase("loading the base model and adapter, digesting the base model, calibrating")
            contributor = load_contributor(base_dir=args.base, adapter_dir=args.adapter, calibration_ids=calibration,
                                           shift=args.shift, precision=precision_from_args(args),
                                           max_rel_error=args.max_rel_error, bindings=bindings)
            total = len(contributor.modules) * len(config.buckets())
            phase(f"committing: {total} anchors (one per module and allowed T)")
            commitment = publish_commitment(contributor, config, progress=lambda done, _total, label: phase(
                f"committing: anchor {done} of {total} done ({label})"))
            if publish is not None:
                _write_published(publish, commitment)
            phase(f"starting {workers} proving worker(s)")
            prover = make_prover(workers=workers, ray_address=args.ray)
            app = create_app(contributor, config, prover, commitment)
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
        batching = (f"batching a session's calls within {config.batch_window:g} s up to T={commitment.tokens[-1]}"
                    if config.batching else "no batching")
        out.print(f"zkref serve: adapter commitment {commitment.id} (T {commitment.tokens}; {batching})"
                  + (f", published to {publish}" if publish is not None else ""))
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


def _publish_path(path: str | None) -> Path | None:
    """--publish FILE: checked before any work (its directory exists; an existing file is compared, never replaced)."""
    if path is None:
        return None
    p = Path(path)
    if not p.parent.is_dir():
        raise ValueError(f"--publish {path}: {p.parent} is not a directory")
    if p.exists() and not p.is_file():
        raise ValueError(f"--publish {path}: not a file")
    return p


def _write_published(path: Path, commitment) -> None:
    """Write the commitment clients pin; an existing file must hold exactly this commitment (a changed adapter,
    precision, SRS or T set makes a new one, which clients pinned to the old file would refuse)."""
    data = commitment.canonical_bytes()
    if path.exists():
        if path.read_bytes() != data:
            raise ValueError(f"--publish {path}: the file holds another adapter commitment than this server's "
                             f"({commitment.id[:16]}…); clients pinned to it would refuse this server. Publish to a "
                             "new file")
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(0)


def register(subparsers) -> None:
    from zkref.lora.statement import AdapterBinding

    p = subparsers.add_parser(
        "serve", help="serve a peft LoRA adapter over HTTP, proving every call",
        description="Serve a peft LoRA adapter to base-model users over HTTP (specs/protocol.md; OpenAPI at "
                    "/openapi.json): each module calibrated once, every call answered at once and proven in the "
                    "background. Runs until interrupted.")
    p.add_argument("--base", required=True, metavar="DIR", help="base model directory (transformers, safetensors)")
    p.add_argument("--adapter", required=True, metavar="DIR", help="peft adapter directory (save_pretrained)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=PORT, default=8000, metavar="N", help="TCP port (0: any free port, printed)")
    p.add_argument("--backend", choices=["zkref", "ezkl"], default="ezkl",
                   help="ezkl: zero-knowledge proofs; zkref: the fast mock check")
    p.add_argument("--token", default=None, help=f"require this bearer token (default: ${TOKEN_ENV} if set)")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="accept every token in FILE, one per line, each a separate client (with --token: both)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress spinner while starting and no access log (one rate-limited line per request) "
                        "on stderr")
    proving = p.add_argument_group("proving")
    proving.add_argument("--ray", default=None, metavar="ADDRESS",
                         help="prove on Ray: auto, HOST:6379, ray://HOST:10001, or local (a private instance)")
    proving.add_argument("--workers", type=WORKERS, default=None, metavar="N",
                         help="proofs at once (default: 1 for ezkl, which uses every core; up to 4 for zkref)")
    proving.add_argument("--srs", default=None, metavar="FILE",
                         help="ezkl: a ceremony SRS file (default: a development SRS, insecure)")
    proving.add_argument("--cache-dir", default=None, metavar="DIR",
                         help="ezkl: circuit, key and SRS cache (default: $ZKREF_CACHE or ~/.cache/zkref)")
    proving.add_argument("--token-buckets", default=None, metavar="T1,T2,…",
                         help="the token counts calls are proven at, each set up at startup and committed (default: "
                              "powers of 4 below --max-tokens, and --max-tokens); a call is zero-padded to the next")
    proving.add_argument("--no-batching", action="store_true",
                         help="prove every call alone (default: a session's queued calls of one module are proven "
                              "together, as one statement of stacked rows)")
    proving.add_argument("--batch-window", type=positive(allow_zero=True), default=0.25, metavar="SECONDS",
                         help="seconds a call waits for its session's next calls before it may be proven alone")
    proving.add_argument("--publish", default=None, metavar="FILE",
                         help="write the adapter commitment (what clients pin with --anchors) to FILE; an existing "
                              "FILE must hold the same commitment")
    quant = p.add_argument_group("calibration and quantisation")
    quant.add_argument("--calibration-ids", default=None, metavar="IDS",
                       help="the calibration prompt as comma-separated token ids (default: 16 seeded random ids, "
                            "published in the manifest)")
    quant.add_argument("--shift", type=integer(0, MAX_SHIFT), default=None, metavar="S",
                       help="fix every module's requant shift instead of calibrating it")
    add_precision_arguments(quant, "the calibration prompt")
    add_binding_arguments(p.add_argument_group("bindings: how x, the adapter and y are tied to each proof"),
                          adapter_choices=[b.value for b in AdapterBinding if b.bound])
    limits = p.add_argument_group("limits (published in the manifest)")
    limits.add_argument("--max-tokens", type=integer(1, MAX_TOKENS), default=64, metavar="T",
                        help="largest T per call")
    limits.add_argument("--max-queue", type=integer(1, 1 << 20), default=64, metavar="N",
                        help="calls queued or being proven before calls get 429")
    limits.add_argument("--max-concurrent", type=integer(1, 1 << 16), default=32, metavar="N",
                        help="requests in progress before 429")
    limits.add_argument("--max-connections", type=integer(1, 1 << 20), default=1024, metavar="N",
                        help="open connections; beyond them new ones are closed at once (the open-file limit is "
                             "raised to twice this if needed)")
    limits.add_argument("--max-connections-per-ip", type=integer(1, 1 << 20), default=128, metavar="N",
                        help="open connections per peer address")
    limits.add_argument("--header-timeout", type=positive(), default=10.0, metavar="SECONDS",
                        help="seconds for a whole request head")
    limits.add_argument("--min-body-rate", type=integer(1, 1 << 30), default=16 << 10, metavar="BYTES",
                        help="bytes/s a call body must arrive at, after a short grace")
    limits.add_argument("--max-queue-per-client", type=integer(1, 1 << 20), default=16, metavar="N",
                        help="one client's calls queued or being proven")
    limits.add_argument("--max-results-per-client", type=integer(1, 1 << 24), default=256, metavar="N",
                        help="one client's calls kept (its own oldest finished evicted first)")
    limits.add_argument("--prove-timeout", type=positive(), default=600.0, metavar="SECONDS",
                        help="seconds before a proof is failed")
    limits.add_argument("--result-ttl", type=positive(), default=3600.0, metavar="SECONDS",
                        help="seconds a finished call's proof is kept")
    limits.add_argument("--max-results", type=integer(1, 1 << 24), default=1024, metavar="N",
                        help="calls kept (oldest finished evicted first); more than --max-queue")
    limits.add_argument("--max-result-mb", type=integer(1, 1 << 20), default=256, metavar="MIB",
                        help="MiB of proofs kept (oldest evicted first)")
    p.set_defaults(func=cmd_serve)
