"""The base-model user's side: run your own base model, get each adapter's delta from its contributor, verify it all.

`BaseModelClient(base_dir=…, contributors=[url, …], anchors=[file, …]).run(prompt_ids)` (or `.generate(…)`):

1. loads its own copy of the base model (transformers, local files only) and digests it (zkref.models.digest);
2. fetches each contributor's manifest and its adapter commitment (`AdapterCommitment`: per module the statement,
   the dequantisation and the adapter anchor of every allowed T, fixed before any call). With `anchors` (files a
   contributor published earlier) a commitment that differs in any byte from every pinned one is refused; without,
   the commitment is pinned on first use for this client's lifetime — labelled so in every result. A contributor
   whose base-model digest, modules, statements or dequantisation differ from its commitment, or whose statements
   the verifying backend cannot check, is refused — all before any activation leaves the machine;
3. runs the forward pass with a forward hook on every served module: the base layer computes W x locally; the hook
   quantises x with the committed scale, sends x_q (with this client's random session id), receives y_q,
   dequantises it with the committed parameters and adds the delta to the module's output (several contributors on
   one module: their deltas add, as peft adds active adapters);
4. fetches every call's proof and verifies it with the committed backend against what the client itself holds: the
   proof's scope names the calls whose rows it stacks (this session's calls of one module, zero-padded to a
   committed T), and the client rebuilds that statement, the x_q rows it sent and the y_q rows it received, and
   checks them against the committed anchor. A proof for another call, other activations, another adapter, a
   changed output or a call this client never made fails, named by module and call.

What each side knows: the contributor never sees the base model's weights or the prompt, only each served module's
quantised input x_q; the client never sees the adapter (with the zkref mock backend it does: that backend's
"proof" is the witness). The accuracy figures compare with the float peft model, which needs the adapter: pass
`reference_adapters` only where the adapter is available (an evaluation, a demo), never to a real contributor.
`use_optimization=False` runs that float peft model instead of the protocol: logits labelled unverified.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from pydantic import ValidationError

from backends import get_backend
from backends.base import MAX_PROOF_BYTES, AdapterAnchor, Backend, Proof, Verdict, anchor_gap
from zkref.lora.commitments import activations_digest
from zkref.lora.quantisation import ScaleMode
from zkref.lora.statement import ActivationBinding, AdapterBinding, LoRAPublic, LoRAStatement
from zkref.protocol import messages as m
from zkref.protocol.tensors import TensorFormatError, decode_tensors, encode_tensors

MAX_MANIFEST_BYTES = 64 << 20
MAX_COMMITMENT_BYTES = 64 << 20
MAX_SMALL_ANSWER_BYTES = 1 << 20
MAX_PROOF_ANSWER_BYTES = 2 * m.MAX_B64_PROOF + (16 << 20)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
RETRY_MIN_SECONDS = 0.1
RETRY_MAX_SECONDS = 5.0
"""Back-off after a 429: at least RETRY_MIN_SECONDS (a `Retry-After: 0` must not make a busy loop), doubling per
consecutive refusal, at most RETRY_MAX_SECONDS, until the request's deadline."""
TOFU_WARNING = ("the adapter commitment was pinned on first use (no --anchors file): the contributor committed before "
                "this session's first call, but nothing ties it to an earlier session; save it (--save-anchors) and "
                "pin it next time")


def read_commitment(path: str | os.PathLike) -> m.AdapterCommitment:
    """A published adapter commitment file (`GET /v1/commitment`, `zkref serve --publish`), strictly parsed."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such commitment file")
    if p.stat().st_size > MAX_COMMITMENT_BYTES:
        raise ValueError(f"{p}: larger than {MAX_COMMITMENT_BYTES:,} bytes")
    try:
        return m.AdapterCommitment.model_validate_json(p.read_bytes())
    except ValueError as exc:
        raise ValueError(f"{p}: not an adapter commitment ({str(exc).splitlines()[0][:300]})") from None


class ContributorError(ValueError):
    """A contributor cannot be used (unreachable, refused a request, answered out of protocol, another base model)."""


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A contributor's base URL and the bearer token it requires (if any)."""

    url: str
    token: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ValueError(f"contributor URL must start with http:// or https://, got {self.url!r}")
        object.__setattr__(self, "url", self.url.rstrip("/"))


@dataclass(frozen=True, kw_only=True)
class CallReport:
    """One call of one module to one contributor, and whether its proof verified (with the reason)."""

    contributor: str
    module: str
    call: int
    """Index of this call among the calls of `module` to this contributor in this client (0, 1, …)."""
    call_id: str
    tokens: int
    statement_id: str
    verified: bool
    reason: str
    worker: dict | None = None
    proof_seconds: float = 0.0
    proven_with: int = 1
    """How many calls the proof that covers this one covers (server-side batching), itself included."""
    proof_id: str = ""
    """The first 16 hex digits of SHA-256 over the proof's bytes: calls proven together share it."""

    @property
    def label(self) -> str:
        return f"{self.module} call {self.call}"

    def to_json(self) -> dict:
        return {"contributor": self.contributor, "module": self.module, "call": self.call, "call_id": self.call_id,
                "tokens": self.tokens, "statement_id": self.statement_id, "verified": self.verified,
                "reason": self.reason, "worker": self.worker, "proof_seconds": round(self.proof_seconds, 4),
                "proven_with": self.proven_with, "proof_id": self.proof_id}


@dataclass(frozen=True, kw_only=True)
class ModuleAccuracy:
    """The dequantised deltas the client added against the float peft delta of the same activations."""

    module: str
    calls: int
    max_abs_error: float
    max_abs_delta: float

    @property
    def relative_error(self) -> float:
        """max |delta − float delta| / max |float delta| over the module's calls (0 when the float delta is 0)."""
        return self.max_abs_error / self.max_abs_delta if self.max_abs_delta else 0.0

    def to_json(self) -> dict:
        return {"module": self.module, "calls": self.calls, "relative_error": self.relative_error,
                "max_abs_error": self.max_abs_error, "max_abs_delta": self.max_abs_delta}


@dataclass(frozen=True, kw_only=True)
class Accuracy:
    """Per module: relative error of the delta; overall: logits against the float peft model's (same prompt)."""

    modules: tuple[ModuleAccuracy, ...]
    max_logit_error: float
    top1_agreement: float
    reference: str

    def to_json(self) -> dict:
        return {"modules": {a.module: a.to_json() for a in self.modules}, "max_logit_error": self.max_logit_error,
                "top1_agreement": self.top1_agreement, "reference": self.reference}


@dataclass(frozen=True, kw_only=True, eq=False)
class ClientResult:
    """The run's logits (tokens × vocab), whether every call verified, each call's report, the accuracy."""

    logits: np.ndarray
    verified: bool
    calls: tuple[CallReport, ...]
    accuracy: Accuracy | None
    label: str
    prompt_ids: tuple[int, ...]
    warnings: tuple[str, ...] = ()
    contributors: tuple[dict, ...] = ()
    generated_ids: tuple[int, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    """forward (the model with every delta), verify (from the last forward pass until every proof verified), total;
    with `generate`, also tokens_per_second (generated tokens ÷ total: every proof verified)."""

    @property
    def failures(self) -> tuple[CallReport, ...]:
        return tuple(c for c in self.calls if not c.verified)

    def to_json(self) -> dict:
        return {"label": self.label, "verified": self.verified, "prompt_ids": list(self.prompt_ids),
                "logits": self.logits.tolist(), "calls": [c.to_json() for c in self.calls],
                "accuracy": None if self.accuracy is None else self.accuracy.to_json(),
                "warnings": list(self.warnings), "contributors": list(self.contributors),
                "generated_ids": list(self.generated_ids), "timings": self.timings}


@dataclass(eq=False)
class _Sent:
    """What the client holds about one call until its proof is verified."""

    session: "_Session"
    module: str
    call: int
    call_id: str
    x_q: np.ndarray
    y_q: np.ndarray
    problems: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.x_q.shape[0]


@dataclass(eq=False)
class _Session:
    """One contributor: its endpoint, manifest, pinned commitment, verifying backend, and this client's calls."""

    endpoint: Endpoint
    manifest: m.Manifest
    commitment: m.AdapterCommitment
    pinned: bool
    """True when the commitment equals a file given with `anchors`; False when pinned on first use."""
    backend: Backend
    session_id: str = field(default_factory=lambda: secrets.token_hex(16))
    counts: dict[str, int] = field(default_factory=dict)
    sent: dict[str, _Sent] = field(default_factory=dict)
    """Every call this client made to this contributor, by call id: a proof's scope may name only these."""
    verdicts: dict[tuple, Verdict] = field(default_factory=dict)
    """Verdicts by (module, scope rows, proof hash): a proof covering several calls is verified once."""
    keys: dict[str, bytes] = field(default_factory=dict)
    """Verifying keys fetched by their hash (`GET /v1/keys/{vk_hash}`), each checked against it."""


def _module_dims(module) -> tuple[int, int]:
    import torch
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    if isinstance(module, torch.nn.Linear):
        return int(module.in_features), int(module.out_features)
    raise ValueError(f"{type(module).__name__} is neither nn.Linear nor Conv1D")


def tokenize(base_dir: str | os.PathLike, text: str) -> list[int]:
    """Token ids of `text` with the base model directory's own tokenizer (local files only)."""
    d = Path(base_dir)
    if not any((d / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"{d} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): pass token ids instead "
                         "(--prompt-ids)")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(d, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the tokenizer in {d}: {exc}") from None
    ids = tokenizer(text)["input_ids"]
    if not ids:
        raise ValueError("the prompt has no tokens")
    return [int(t) for t in ids]


def retry_delay(retry_after: str, refusals: int) -> float:
    """Seconds to wait after a 429: the server's Retry-After (delay-seconds) if it is longer, else an exponential
    back-off from RETRY_MIN_SECONDS; never more than RETRY_MAX_SECONDS, never less than RETRY_MIN_SECONDS."""
    backoff = RETRY_MIN_SECONDS * 2 ** min(refusals, 16)
    asked = float(retry_after) if retry_after.isdigit() and len(retry_after) < 8 else 0.0
    return max(RETRY_MIN_SECONDS, min(RETRY_MAX_SECONDS, max(asked, backoff)))


class BaseModelClient:
    """A base-model user talking to one or more contributors (see the module docstring)."""

    def __init__(self, *, base_dir: str | os.PathLike, contributors: Sequence[str | Endpoint] = (),
                 token: str | None = None, use_optimization: bool = True,
                 reference_adapters: Sequence[str | os.PathLike] = (), srs: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, timeout: float = 60.0, proof_timeout: float = 900.0,
                 transport: httpx.BaseTransport | None = None,
                 anchors: Sequence[str | os.PathLike | m.AdapterCommitment] = ()):
        """contributors: URLs (with `token` for all) or `Endpoint`s; anchors: adapter commitments published earlier
        (files or objects): every contributor's commitment must be one of them, byte for byte, or it is refused;
        without them each commitment is pinned on first use (and labelled so); srs / cache_dir: where the EZKL
        verifier finds the SRS (a ceremony SRS file, or the cache holding the development SRS); transport: an httpx
        transport (proxies, mTLS, or a test's man in the middle)."""
        from zkref.models.peft_loading import load_base_model

        self.pinned = {c.id: c for c in (a if isinstance(a, m.AdapterCommitment) else read_commitment(a)
                                         for a in anchors)}

        self.base_dir = Path(base_dir)
        self.endpoints = tuple(c if isinstance(c, Endpoint) else Endpoint(url=c, token=token) for c in contributors)
        if use_optimization and not self.endpoints:
            raise ValueError("at least one contributor URL is needed (or use_optimization=False with "
                             "reference adapters)")
        if not use_optimization and not reference_adapters:
            raise ValueError("use_optimization=False runs the float peft model: it needs the adapter directories "
                             "(reference_adapters)")
        for name, v in (("timeout", timeout), ("proof_timeout", proof_timeout)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        self.use_optimization = use_optimization
        self.reference_adapters = tuple(Path(p) for p in reference_adapters)
        self.srs = None if srs is None else str(srs)
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.timeout, self.proof_timeout = float(timeout), float(proof_timeout)
        self.model = load_base_model(self.base_dir)
        self.http = httpx.Client(transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False)
        self.sessions: list[_Session] = []
        self.serving: dict[str, list[tuple[_Session, m.ModuleInfo]]] = {}
        self._digests: dict[str, str] = {}
        self._reference = None

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "BaseModelClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- HTTP --------------------------------------------------------------------------------------------------------
    def _request(self, endpoint: Endpoint, method: str, path: str, *, limit: int, params: dict | None = None,
                 content: bytes | None = None, deadline: float | None = None,
                 extra_headers: dict[str, str] | None = None) -> bytes:
        """One request with a bounded answer; 429 is retried (`retry_delay`) until `deadline`; other errors raise."""
        headers = {"accept": "application/json"} | (extra_headers or {})
        if endpoint.token:
            headers["authorization"] = f"Bearer {endpoint.token}"
        if content is not None:
            headers["content-type"] = "application/octet-stream"
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        refusals = 0
        while True:
            try:
                with self.http.stream(method, endpoint.url + path, params=params, content=content,
                                      headers=headers) as response:
                    chunks, size = [], 0
                    for chunk in response.iter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise ContributorError(f"{endpoint.url}{path}: answer exceeds {limit:,} bytes")
                        chunks.append(chunk)
                    status = response.status_code
                    retry = response.headers.get("retry-after", "")
            except httpx.HTTPError as exc:
                raise ContributorError(f"{endpoint.url}{path}: {type(exc).__name__}: {exc}") from None
            body = b"".join(chunks)
            if status == 200:
                return body
            if status == 429 and time.monotonic() < deadline:
                time.sleep(min(retry_delay(retry, refusals), max(0.0, deadline - time.monotonic())))
                refusals += 1
                continue
            try:
                err = m.ErrorResponse.model_validate_json(body).error
                detail = f"{err.code}: {err.message}"
            except ValueError:
                detail = body[:200].decode("utf-8", "replace")
            raise ContributorError(f"{endpoint.url}{path}: HTTP {status} {detail}")

    def _parse(self, endpoint: Endpoint, model: type, body: bytes, what: str):
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(part) for part in first.get("loc", ())) or "document"
            raise ContributorError(f"{endpoint.url}: {what} is not a valid {model.__name__}: {where}: "
                                   f"{str(first.get('msg', exc))[:300]}") from None
        except ValueError as exc:
            raise ContributorError(f"{endpoint.url}: {what} is not a valid {model.__name__}: "
                                   f"{str(exc).splitlines()[0][:300]}") from None

    # -- round 0: manifests ------------------------------------------------------------------------------------------
    def _own_digest(self, format_version: str) -> str:
        if format_version not in self._digests:
            from zkref.models.digest import model_digest

            self._digests[format_version] = model_digest(self.base_dir, progress=False,
                                                         format_version=format_version).hex
        return self._digests[format_version]

    def _backend(self, name: str) -> Backend:
        options: dict = {}
        if name == "ezkl":
            options = {k: v for k, v in (("srs", self.srs), ("cache_dir", self.cache_dir)) if v is not None}
        return get_backend(name, **options)

    def connect(self) -> None:
        """Fetch every manifest, check base-model digests and module shapes, decide who serves which module."""
        if self.sessions or not self.use_optimization:
            return
        for endpoint in self.endpoints:
            body = self._request(endpoint, "GET", "/v1/manifest", limit=MAX_MANIFEST_BYTES)
            manifest = self._parse(endpoint, m.Manifest, body, "the manifest")
            theirs = manifest.base_model.digest
            try:
                ours = self._own_digest(manifest.base_model.format_version)
            except ValueError as exc:
                raise ContributorError(f"{endpoint.url}: cannot compute our digest in its format: {exc}") from None
            if theirs != ours:
                raise ContributorError(f"{endpoint.url} serves an adapter for another base model: its digest "
                                       f"{theirs} differs from ours {ours} ({manifest.base_model.format_version})")
            commitment, pinned = self._commitment(endpoint, manifest)
            session = _Session(endpoint=endpoint, manifest=manifest, commitment=commitment, pinned=pinned,
                               backend=self._backend(commitment.backend))
            self._check_session(session)
            for info in manifest.modules:
                try:
                    module = self.model.get_submodule(info.name)
                    dims = _module_dims(module)
                except (AttributeError, ValueError) as exc:
                    raise ContributorError(f"{endpoint.url} serves {info.name}, which our base model has no usable "
                                           f"module for ({exc})") from None
                if dims != (info.d_in, info.d_out):
                    raise ContributorError(f"{endpoint.url}: {info.name} is {info.d_in}→{info.d_out} there, "
                                           f"{dims[0]}→{dims[1]} in our base model")
                self.serving.setdefault(info.name, []).append((session, info))
            self.sessions.append(session)

    # -- round 1: the adapter commitment -------------------------------------------------------------------------
    def _commitment(self, endpoint: Endpoint, manifest: m.Manifest) -> tuple[m.AdapterCommitment, bool]:
        """The contributor's commitment: one of the pinned files, byte for byte, or (none given) what it publishes
        now, pinned on first use. It must be the one the manifest names."""
        if self.pinned and manifest.commitment_id not in self.pinned:
            raise ContributorError(f"{endpoint.url}: its adapter commitment {manifest.commitment_id[:16]}… is none of "
                                   f"the pinned ones ({', '.join(k[:16] + '…' for k in self.pinned)}): refused "
                                   "before any activation was sent")
        body = self._request(endpoint, "GET", "/v1/commitment", limit=MAX_COMMITMENT_BYTES)
        published = self._parse(endpoint, m.AdapterCommitment, body, "the adapter commitment")
        if published.id != manifest.commitment_id:
            raise ContributorError(f"{endpoint.url}: the published commitment is {published.id[:16]}…, the manifest "
                                   f"names {manifest.commitment_id[:16]}…")
        if self.pinned:
            return self.pinned[published.id], True
        return published, False

    def _check_session(self, session: _Session) -> None:
        """Refuse a contributor whose manifest strays from its commitment, or whose committed statements the
        verifying backend cannot check (each would otherwise fail only after activations were sent)."""
        manifest, commitment, url = session.manifest, session.commitment, session.endpoint.url
        if commitment.backend != manifest.backend.name or commitment.base_model != manifest.base_model:
            raise ContributorError(f"{url}: the manifest's backend or base model differs from its commitment's")
        if [i.name for i in manifest.modules] != [c.name for c in commitment.modules]:
            raise ContributorError(f"{url}: the manifest's modules differ from its commitment's")
        if manifest.limits.max_tokens > commitment.tokens[-1]:
            raise ContributorError(f"{url}: max_tokens {manifest.limits.max_tokens} exceeds the largest committed T")
        for info in manifest.modules:
            mod = commitment.module(info.name)
            if info.statement != mod.statement or info.dequantisation != mod.dequantisation:
                raise ContributorError(f"{url}: {info.name}'s statement or dequantisation (scales, scaling, shift) "
                                       "differs from the committed one: refused")
            for tokens in commitment.tokens:
                try:
                    statement = mod.statement.statement(tokens)
                except ValueError as exc:
                    raise ContributorError(f"{url}: {info.name}'s committed statement is not one this version "
                                           f"proves: {exc}") from None
                support = session.backend.supports(statement)
                if not support:
                    raise ContributorError(f"{url}: {info.name} at T={tokens}: the {session.backend.name} verifier "
                                           f"cannot check it ({support.reason})")

    def pin_anchor(self, session: _Session, info: m.ModuleInfo, tokens: int) -> AdapterAnchor:
        """The committed anchor a call of `tokens` rows of `info` is proven under (at the committed T ≥ tokens),
        checked to pin what its statement's binding needs; ContributorError before anything is sent otherwise."""
        commitment = session.commitment
        bucket = commitment.bucket(tokens)
        if bucket is None:
            raise ContributorError(f"{session.endpoint.url}: {tokens} tokens exceed the largest committed T "
                                   f"({commitment.tokens[-1]}) of {info.name}")
        statement = commitment.module(info.name).statement.statement(bucket)
        anchor = commitment.anchor(info.name, bucket)
        gap = anchor_gap(statement, anchor, backend=session.backend.name)
        if gap:
            raise ContributorError(f"{session.endpoint.url}: {info.name} at T={bucket}: {gap}")
        return anchor

    # -- round 2: calls ----------------------------------------------------------------------------------------------
    def _call(self, session: _Session, info: m.ModuleInfo, x: np.ndarray, sent: list[_Sent]) -> np.ndarray:
        """Send one module call; returns the delta the client computes from the received y_q."""
        tokens = x.shape[0]
        self.pin_anchor(session, info, tokens)
        dequant = session.commitment.module(info.name).dequantisation.dequantisation(info.d_out)
        quantised = dequant.quantize(x)                     # the committed width and scale mode
        x_q = quantised.x_q.astype(np.int8 if dequant.activation_bits <= 8 else np.int16)
        request = {"x_q": x_q} | ({"x_scales": quantised.scales.astype(np.float64)}
                                  if dequant.x_mode is ScaleMode.PER_TOKEN else {})
        body = self._request(session.endpoint, "POST", f"/v1/modules/{info.name}/calls",
                             limit=MAX_SMALL_ANSWER_BYTES + 64 * tokens * info.d_out,
                             content=encode_tensors(request), extra_headers={m.SESSION_HEADER: session.session_id})
        accepted = self._parse(session.endpoint, m.CallAccepted, body, f"the answer to a call of {info.name}")
        index = session.counts.get(info.name, 0)
        session.counts[info.name] = index + 1
        label = f"{info.name} call {index}"
        try:
            raw = m.b64decode(accepted.tensors, "tensors", 16 * tokens * info.d_out + 4096)
            tensors = decode_tensors(raw, info.y_specs(tokens))
        except (ValueError, TensorFormatError) as exc:
            raise ContributorError(f"{session.endpoint.url}: {label}: the answer's tensors are malformed: {exc}") \
                from None
        y_q = tensors["y_q"].astype(np.int64)
        delta = dequant.apply(y_q, quantised.scales)
        record = _Sent(session=session, module=info.name, call=index, call_id=accepted.call_id,
                       x_q=x_q.astype(np.int64), y_q=y_q)
        if (accepted.module, accepted.tokens) != (info.name, tokens):
            record.problems.append(f"the answer names module {accepted.module}, {accepted.tokens} tokens; the call was "
                                   f"{info.name}, {tokens}")
        if accepted.call_id in session.sent:
            record.problems.append("the contributor gave this call the id of an earlier one")
        if not np.allclose(tensors["delta"], delta, rtol=1e-12, atol=0.0):
            record.problems.append("the delta sent is not the dequantisation of the y_q sent (tampered delta)")
        session.sent.setdefault(accepted.call_id, record)
        sent.append(record)
        return delta

    # -- round 3: proofs ---------------------------------------------------------------------------------------------
    @staticmethod
    def _public(statement: LoRAStatement, x_q: np.ndarray, y_q: np.ndarray, anchor: AdapterAnchor) -> LoRAPublic:
        """The public values from what the client holds: x_q it sent, y_q it received, the pinned adapter digest."""
        x_known = statement.x_binding in (ActivationBinding.PUBLIC, ActivationBinding.POLYCOMMIT)
        hashed_x = statement.x_binding in (ActivationBinding.HASHED, ActivationBinding.HASHED_PACKED)
        hashed_adapter = statement.adapter_binding in (AdapterBinding.HASHED, AdapterBinding.HASHED_PACKED)
        return LoRAPublic(
            y_q=y_q, x_q=x_q if x_known else None,
            x_digest=activations_digest(x_q, packed=statement.x_binding is ActivationBinding.HASHED_PACKED,
                                        bits=statement.activation_bits)
            if hashed_x else None,
            adapter_digest=int(anchor.digest, 16) if hashed_adapter and anchor.digest else None)

    def _key(self, session: _Session, vk_hash: str, deadline: float) -> bytes:
        """The verifying key a proof names by hash, fetched once per contributor and checked against the hash (the
        anchor pins it again when the proof is verified). ValueError if it cannot be had."""
        if vk_hash not in session.keys:
            body = self._request(session.endpoint, "GET", f"/v1/keys/{vk_hash}", limit=MAX_PROOF_BYTES,
                                 deadline=deadline)
            if hashlib.sha256(body).hexdigest() != vk_hash:
                raise ValueError(f"the verifying key served for {vk_hash[:16]}… has another hash")
            session.keys[vk_hash] = body
        return session.keys[vk_hash]

    def _check_scope(self, record: _Sent, status: m.CallStatus, proof: Proof, deadline: float) -> Verdict:
        """Verify the proof that answers `record`: its scope's rows are calls this client made in this session (x and
        y stacked in scope order, the rest zero), at a committed T, under the committed anchor. A proof covering
        several calls is verified once (`_Session.verdicts`)."""
        session, scope = record.session, status.scope
        key = (scope.module, scope.tokens, tuple((r.call_id, r.start, r.tokens) for r in scope.calls),
               hashlib.sha256(proof.data).hexdigest(), proof.vk_hash)
        if key in session.verdicts:
            return session.verdicts[key]
        verdict = self._verify_scope(session, scope, proof, deadline)
        session.verdicts[key] = verdict
        return verdict

    def _verify_scope(self, session: _Session, scope: m.ProofScope, proof: Proof, deadline: float) -> Verdict:
        commitment = session.commitment
        if scope.tokens not in commitment.tokens:
            return Verdict(False, f"the proof is at T={scope.tokens}, which the contributor never committed to")
        members = []
        for rows in scope.calls:
            other = session.sent.get(rows.call_id)
            if other is None:
                return Verdict(False, f"the proof covers call {rows.call_id}, which this client never made")
            if other.module != scope.module or other.tokens != rows.tokens:
                return Verdict(False, f"the proof's scope misstates call {rows.call_id} ({scope.module}, {rows.tokens} "
                                      f"rows; it was {other.module}, {other.tokens})")
            members.append((rows, other))
        statement = commitment.module(scope.module).statement.statement(scope.tokens)
        if scope.statement_id != statement.id:
            return Verdict(False, f"the proof's scope names statement {scope.statement_id}, the commitment gives "
                                  f"{statement.id} at T={scope.tokens}")
        x_q = np.zeros(statement.shape.x_shape, dtype=np.int64)
        y_q = np.zeros(statement.shape.y_shape, dtype=np.int64)
        for rows, other in members:
            x_q[rows.start:rows.start + rows.tokens] = other.x_q
            y_q[rows.start:rows.start + rows.tokens] = other.y_q
        anchor = commitment.anchor(scope.module, scope.tokens)
        if not proof.vk:                # served by hash: fetched only when it is the key the commitment pins here
            if proof.vk_hash != anchor.vk_hash:
                return Verdict(False, f"verifying key differs from the pinned one (the proof names "
                                      f"{str(proof.vk_hash)[:16]}…, the commitment pins {str(anchor.vk_hash)[:16]}…)")
            try:
                proof = dataclasses.replace(proof, vk=self._key(session, anchor.vk_hash, deadline))
            except ValueError as exc:
                return Verdict(False, f"malformed proof: {exc}")
        return session.backend.verify(statement, self._public(statement, x_q, y_q, anchor), proof, anchor=anchor)

    def _verify(self, record: _Sent, deadline: float) -> CallReport:
        session = record.session
        report = dict(contributor=session.endpoint.url, module=record.module, call=record.call,
                      call_id=record.call_id, tokens=record.tokens)
        t0 = time.monotonic()
        wait = session.manifest.limits.max_wait_seconds
        status = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                body = self._request(session.endpoint, "GET", f"/v1/calls/{record.call_id}",
                                     limit=MAX_PROOF_ANSWER_BYTES, params={"wait": max(0.0, min(wait, remaining))},
                                     deadline=deadline)
                status = self._parse(session.endpoint, m.CallStatus, body, "the proof answer")
                if status.status in ("done", "failed") or time.monotonic() >= deadline:
                    break
        except ContributorError as exc:
            return CallReport(**report, statement_id="", verified=False, reason=f"no proof: {exc}",
                              proof_seconds=time.monotonic() - t0)
        seconds = time.monotonic() - t0
        worker = None if status.worker is None else status.worker.model_dump()
        report |= dict(worker=worker, proof_seconds=seconds, statement_id=status.scope.statement_id
                       if status.scope is not None else "")
        if status.call_id != record.call_id or status.module != record.module or status.tokens != record.tokens:
            return CallReport(**report, verified=False, reason=f"the answer is for call {status.call_id} "
                                                               f"({status.module}, {status.tokens} tokens)")
        if status.status == "failed":
            return CallReport(**report, verified=False, reason=f"the contributor failed to prove it: {status.reason}")
        if status.status != "done":
            return CallReport(**report, verified=False, reason=f"no proof within {self.proof_timeout:g} s "
                                                               f"(still {status.status})")
        try:
            proof: Proof = status.proof.proof()
        except ValueError as exc:
            return CallReport(**report, verified=False, reason=f"malformed proof: {exc}")
        report["proof_id"] = hashlib.sha256(proof.data).hexdigest()[:16]
        verdict = self._check_scope(record, status, proof, deadline)
        problems = list(record.problems) + ([] if verdict else [verdict.reason])
        reason = "; ".join(problems) if problems else verdict.reason
        if verdict and len(status.scope.calls) > 1:
            reason += f" (one proof of {len(status.scope.calls)} calls, T={status.scope.tokens})"
        return CallReport(**report, verified=bool(verdict) and not record.problems, reason=reason,
                          proven_with=len(status.scope.calls))

    # -- the forward pass --------------------------------------------------------------------------------------------
    def _check_prompt(self, prompt_ids: Sequence[int], new_tokens: int = 0) -> tuple[int, ...]:
        ids = tuple(int(t) for t in prompt_ids)
        if not ids:
            raise ValueError("the prompt has no tokens")
        vocab = getattr(self.model.config, "vocab_size", None)
        if any(t < 0 or (isinstance(vocab, int) and t >= vocab) for t in ids):
            raise ValueError(f"token ids must lie in [0, {vocab})")
        for key in ("n_positions", "max_position_embeddings"):
            limit = getattr(self.model.config, key, None)
            if isinstance(limit, int) and len(ids) + new_tokens > limit:
                raise ValueError(f"{len(ids)} prompt tokens and {new_tokens} new ones exceed the model's {limit} "
                                 "positions")
        for session in self.sessions:
            if len(ids) > session.manifest.limits.max_tokens:
                raise ValueError(f"{len(ids)} tokens exceed {session.endpoint.url}'s limit of "
                                 f"{session.manifest.limits.max_tokens} per call")
        return ids

    def _forward(self, model, ids: tuple[int, ...]) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = model(input_ids=torch.tensor([list(ids)], dtype=torch.long))
        return out.logits[0].to(torch.float64).numpy()

    def run(self, prompt_ids: Sequence[int]) -> ClientResult:
        """One forward pass over the prompt with every served module's delta from its contributor, then verify."""
        return self.generate(prompt_ids, 0)

    def generate(self, prompt_ids: Sequence[int], new_tokens: int) -> ClientResult:
        """The prompt's forward pass, then `new_tokens` greedy tokens (each a forward pass of one token over the
        KV cache, every served module's delta from its contributor), then every call's proof verified.

        With `new_tokens` = 0 this is `run`: logits for the prompt. Otherwise the logits are those of every position
        processed (prompt, then each generated token but the last), and `generated_ids` the tokens chosen."""
        import torch

        if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 0:
            raise ValueError(f"new_tokens must be a non-negative integer, got {new_tokens!r}")
        if not self.use_optimization:
            ids = self._check_prompt(prompt_ids, new_tokens)
            logits, generated = self._decode(self._reference_model(), ids, new_tokens)
            return ClientResult(logits=logits, verified=False, calls=(), accuracy=None, prompt_ids=ids,
                                label="float peft model with the adapters held locally: UNVERIFIED",
                                warnings=("no contributor was asked and nothing was proven",),
                                generated_ids=generated)
        self.connect()
        ids = self._check_prompt(prompt_ids, new_tokens)
        for name, servers in self.serving.items():          # every anchor pinned before any activation is sent
            for session, info in servers:
                self.pin_anchor(session, info, len(ids))
                if new_tokens:
                    self.pin_anchor(session, info, 1)
        sent: list[_Sent] = []
        seen: list[tuple[str, np.ndarray, np.ndarray]] = []

        def make_hook(name: str):
            def hook(_module, inputs, output):
                x = inputs[0]
                if x.ndim != 3 or x.shape[0] != 1:
                    raise ValueError(f"{name}: expected input of shape (1, T, d_in), got {tuple(x.shape)}")
                x_np = x[0].detach().to(torch.float64).numpy()
                total = np.zeros((x_np.shape[0], output.shape[-1]), dtype=np.float64)
                for session, info in self.serving[name]:
                    total += self._call(session, info, x_np, sent)
                seen.append((name, x_np, total))
                return output + torch.from_numpy(total).to(output.dtype)[None]
            return hook

        t0 = time.monotonic()
        handles = [self.model.get_submodule(name).register_forward_hook(make_hook(name)) for name in self.serving]
        try:
            logits, generated = self._decode(self.model, ids, new_tokens)
        finally:
            for h in handles:
                h.remove()
        t1 = time.monotonic()
        deadline = t1 + self.proof_timeout
        reports = tuple(self._verify(record, deadline) for record in sent)
        t2 = time.monotonic()
        verified = bool(reports) and all(r.verified for r in reports)
        processed = ids + generated[:-1] if generated else ids
        accuracy = self._accuracy(processed, logits, seen) if self.reference_adapters else None
        timings = {"forward": t1 - t0, "verify": t2 - t1, "total": t2 - t0}
        if new_tokens:
            timings["tokens_per_second"] = new_tokens / timings["total"] if timings["total"] > 0 else 0.0
        label = ("every call's proof verified" if verified else
                 f"{sum(not r.verified for r in reports)} of {len(reports)} calls NOT verified")
        return ClientResult(logits=logits, verified=verified, calls=reports, accuracy=accuracy, prompt_ids=ids,
                            label=label, warnings=self._warnings(), contributors=self._contributors(),
                            generated_ids=generated, timings=timings)

    def _decode(self, model, ids: tuple[int, ...], new_tokens: int) -> tuple[np.ndarray, tuple[int, ...]]:
        """Logits of the prompt and of each generated position, and the greedy tokens (KV cache: one new token per
        pass, so each served module is called with one row per generated token)."""
        import torch

        rows, generated = [], []
        # transformers ≥ 5 names the KV cache `cache` (in and out); earlier versions `past_key_values`
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model      # a peft model wraps it
        cache_name = "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"
        with torch.no_grad():
            out = model(input_ids=torch.tensor([list(ids)], dtype=torch.long), use_cache=bool(new_tokens))
            rows.append(out.logits[0].to(torch.float64).numpy())
            for step in range(new_tokens):
                token = int(rows[-1][-1].argmax())
                generated.append(token)
                if step == new_tokens - 1:
                    break
                out = model(input_ids=torch.tensor([[token]], dtype=torch.long), use_cache=True,
                            **{cache_name: out[cache_name]})
                rows.append(out.logits[0].to(torch.float64).numpy())
        return np.concatenate(rows, axis=0), tuple(generated)

    def _warnings(self) -> tuple[str, ...]:
        warnings = []
        for session in self.sessions:
            b = session.manifest.backend
            if not session.pinned:
                warnings.append(f"{session.endpoint.url}: {TOFU_WARNING}")
            if not b.zero_knowledge:
                warnings.append(f"{session.endpoint.url}: backend {b.name} is a mock check, not a zero-knowledge "
                                "proof (its proofs reveal the adapter)")
            if b.name == "ezkl" and self.srs is None:
                warnings.append(f"{session.endpoint.url}: EZKL proofs were verified with the SRS found in the local "
                                "cache; if it is a development SRS the contributor who made it could forge proofs "
                                "(pass a ceremony SRS)")
        return tuple(warnings)

    def _contributors(self) -> tuple[dict, ...]:
        return tuple({"url": s.endpoint.url, "backend": s.manifest.backend.name,
                      "zero_knowledge": s.manifest.backend.zero_knowledge,
                      "base_model_digest": s.manifest.base_model.digest,
                      "commitment_id": s.commitment.id, "commitment_pinned": "file" if s.pinned else "first use",
                      "modules": [i.name for i in s.manifest.modules]} for s in self.sessions)

    def save_commitments(self, path: str | os.PathLike) -> list[str]:
        """Write the pinned commitment of the (single) contributor to `path`, to pin it next time with `anchors`;
        returns the ids written. Refuses to overwrite an existing file or to pick one of several contributors."""
        self.connect()
        if len(self.sessions) != 1:
            raise ValueError("--save-anchors writes one contributor's commitment: give exactly one --contributor")
        out = Path(path)
        if out.exists():
            raise ValueError(f"{out} exists: not overwritten")
        if not out.parent.is_dir():
            raise ValueError(f"{out.parent} is not a directory")
        commitment = self.sessions[0].commitment
        out.write_bytes(commitment.canonical_bytes())
        return [commitment.id]

    # -- accuracy against the float peft model (needs the adapters) ---------------------------------------------------
    def _reference_model(self):
        if self._reference is None:
            from zkref.models.peft_loading import load_peft_model

            names = {f"ref{i}": str(d) for i, d in enumerate(self.reference_adapters)}
            peft_model, adapters = load_peft_model(self.base_dir, names)
            peft_model.base_model.set_adapter(list(names), inference_mode=True)
            peft_model.eval()
            self._reference = (peft_model, adapters)
        return self._reference[0]

    def _accuracy(self, ids: tuple[int, ...], logits: np.ndarray,
                  seen: list[tuple[str, np.ndarray, np.ndarray]]) -> Accuracy:
        reference = self._reference_model()
        adapters = self._reference[1]
        float_logits = self._forward(reference, ids)
        by_module: dict[str, list] = {}
        for adapter in adapters.values():
            for mod in adapter.modules:
                by_module.setdefault(mod.name, []).append(mod)
        stats: dict[str, list[float]] = {}
        for name, x, delta in seen:
            if name not in by_module:
                continue
            ref = sum(mod.delta(x) for mod in by_module[name])
            s = stats.setdefault(name, [0, 0.0, 0.0])
            s[0] += 1
            s[1] = max(s[1], float(np.abs(delta - ref).max(initial=0.0)))
            s[2] = max(s[2], float(np.abs(ref).max(initial=0.0)))
        modules = tuple(ModuleAccuracy(module=k, calls=int(v[0]), max_abs_error=v[1], max_abs_delta=v[2])
                        for k, v in stats.items())
        agreement = float(np.mean(np.argmax(logits, axis=-1) == np.argmax(float_logits, axis=-1)))
        return Accuracy(modules=modules, max_logit_error=float(np.abs(logits - float_logits).max()),
                        top1_agreement=agreement,
                        reference=f"float peft model (base + {len(adapters)} adapter(s) loaded locally for "
                                  "evaluation; per-module errors use the client's own activations)")

