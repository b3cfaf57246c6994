"""The messages of the contributor protocol (specs/protocol.md), one typed, bounded model per message and round.

    round 0  GET  /v1/manifest                              → Manifest       what is served and how it is proven
    round 1  GET  /v1/commitment                            → AdapterCommitment  fixed before any call, pinned
             GET  /v1/modules/{module}/anchors/{tokens}     → AnchorStatus   one anchor of the commitment
    round 2  POST /v1/modules/{module}/calls  (safetensors) → CallAccepted   y_q and its dequantisation, at once
    round 3  GET  /v1/calls/{call_id}                       → CallStatus     pending / running / done + proof / failed
             GET  /v1/keys/{vk_hash}                        → bytes          a verifying key a proof names
    any      4xx                                            → ErrorResponse  {"error": {status, code, message}}

Every model forbids unknown fields, is frozen, and bounds every string, list and number, so a client can parse a
hostile server's answer (and the server a hostile request) without unbounded work. Tensors are safetensors bytes
(zkref.protocol.tensors), base64 inside JSON answers; proofs carry their bytes base64. Nothing is ever unpickled.
Conversions to the statement-level objects (`LoRAStatement`, `Dequantisation`, `AdapterAnchor`, `Proof`) live here
so the server and client share one definition.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from backends.base import MAX_PROOF_BYTES, AdapterAnchor, Proof, anchor_gap
from zkref.lora.quantisation import Dequantisation
from zkref.lora.statement import LoRAStatement
from zkref.primitives.field import felt_from_str, felt_to_str
from zkref.primitives.ranges import ACTIVATION_BITS_DEFAULT, MAX_ACTIVATION_BITS, MAX_DIM, MAX_RANK, MAX_TOKENS
from zkref.protocol.tensors import Dim, TensorSpec

FORMAT = "zkref-protocol/2"
"""Version of this protocol; the manifest carries it and a client refuses any other. /2: the adapter commitment
published before any call, proofs of padded and batched rows (`ProofScope`), sessions."""
COMMITMENT_FORMAT = "zkref-adapter-commitment/1"
SESSION_HEADER = "x-zkref-session"
"""A client's random session id (32 hex digits): the server batches only calls of one client and one session, so a
batch proof never holds another party's activations and the client knows every call it covers."""
SESSION_ID = r"^[0-9a-f]{32}$"

MODULE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,255}$"
"""A module's path in the base model (e.g. transformer.h.0.attn.c_attn), as peft and torch name it."""
CALL_ID = r"^[0-9a-f]{32}$"
"""128 random bits, hex: unguessable, so a call id is also the capability to fetch its proof."""
STATEMENT_ID = r"^[0-9a-f]{32}$"
HEX_FELT = r"^0x[0-9a-f]{64}$"
FELT_STR = r"^[0-9a-f]{64}$"

MAX_MODULES = 65_536
MAX_BUCKETS = 16
"""Most token counts a contributor publishes anchors for (each is a circuit with its own keys)."""
MAX_SCOPE_CALLS = MAX_TOKENS
"""Most calls one proof covers (each call has at least one row)."""
MAX_CALIBRATION_TOKENS = 4096
MAX_TEXT = 4096
MAX_REASON = 2048
MAX_ANCHOR_FIELD = 4096
MAX_INSTANCES = 1 << 24
MAX_B64_PROOF = 4 * (MAX_PROOF_BYTES // 3 + 1)
MAX_TENSORS_B64 = 4 * ((1 << 30) // 3 + 1)

ModuleName = Annotated[str, StringConstraints(pattern=MODULE_NAME)]
CallId = Annotated[str, StringConstraints(pattern=CALL_ID)]
StatementId = Annotated[str, StringConstraints(pattern=STATEMENT_ID)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Reason = Annotated[str, StringConstraints(max_length=MAX_REASON)]
ShortStr = Annotated[str, StringConstraints(max_length=MAX_ANCHOR_FIELD)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=86_400 * 365, allow_inf_nan=False)]


class Message(BaseModel):
    """Base of every protocol message: unknown fields refused, immutable, strict types (no "1" for 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str, limit: int) -> bytes:
    """Strict base64 (no whitespace, correct padding) of at most `limit` decoded bytes; ValueError otherwise."""
    if len(text) > 4 * (limit // 3 + 1):
        raise ValueError(f"{what}: more than {limit:,} bytes")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"{what}: not base64 ({exc})") from None


# ----------------------------------------------------------------------------------------------------------------------
# Round 0: the manifest
# ----------------------------------------------------------------------------------------------------------------------

class BackendInfo(Message):
    """Which backend proves every call, and whether its proofs hide the private values."""

    name: Literal["zkref", "ezkl"]
    zero_knowledge: bool
    note: Text


class BaseModelInfo(Message):
    """The contributor's base model, named by its digest (zkref.models.digest): the client compares its own."""

    digest: Annotated[str, StringConstraints(pattern=HEX_FELT)]
    format_version: Annotated[str, StringConstraints(max_length=64)]
    n_tensors: Annotated[int, Field(ge=0, le=1 << 40)]
    n_parameters: Annotated[int, Field(ge=0, le=1 << 50)]


class CalibrationInfo(Message):
    """Where each module's activation scale and shift came from: fixed once, at startup, before any call."""

    token_ids: Annotated[list[Annotated[int, Field(ge=0, le=1 << 31)]], Field(max_length=MAX_CALIBRATION_TOKENS)]
    shift_source: Literal["calibration", "fixed"]
    note: Text


class StatementTemplate(Message):
    """`LoRAStatement.canonical()` of a module without `tokens`: a call of T tokens is proven under
    `LoRAStatement.from_canonical(template | {"tokens": T})`, whose `id` names it."""

    format: Literal["zkref-lora-statement/1"]
    d_in: Annotated[int, Field(ge=1, le=MAX_DIM)]
    d_out: Annotated[int, Field(ge=1, le=MAX_DIM)]
    rank: Annotated[int, Field(ge=1, le=MAX_RANK)]
    shift: Annotated[int, Field(ge=0, le=64)]
    weight_bits: int
    activation_bits: int
    requant: Annotated[str, StringConstraints(pattern=r"^round-half-away-then-clamp-int(8|9|1[0-6])$")]
    """Names z_q's clamp width (`zkref.lora.statement.requant_rule`); `statement` decodes it strictly."""
    x_binding: Literal["public", "hashed", "hashed-packed", "polycommit"]
    adapter_binding: Literal["fixed", "hashed", "hashed-packed", "polycommit"]
    y_binding: Literal["public", "polycommit"]

    def statement(self, tokens: int) -> LoRAStatement:
        """The statement of a call of `tokens` tokens (decoded strictly: any field this version does not prove is
        an error)."""
        return LoRAStatement.from_canonical(self.model_dump() | {"tokens": tokens})

    @classmethod
    def of(cls, statement: LoRAStatement) -> "StatementTemplate":
        canonical = statement.canonical()
        canonical.pop("tokens")
        return cls(**canonical)


class DequantisationInfo(Message):
    """delta[t, o] = scaling · scale_A · scale_x[t] · 2^shift · scale_B[o] · y_q[t, o]; x_q = clamp(round(x/scale_x[t]))
    to `activation_bits`, with scale_x[t] the calibrated `scale_x` (x_mode per-tensor) or token t's own
    max|x_t| / (2^(activation_bits−1) − 1), chosen by the client and sent beside x_q (per-token).

    scale_B has one entry per output channel, or a single entry shared by all (per-tensor weights): a manifest of
    hundreds of wide modules stays small."""

    scaling: Annotated[float, Field(allow_inf_nan=False)]
    scale_A: PositiveFloat
    scale_B: Annotated[list[PositiveFloat], Field(min_length=1, max_length=MAX_DIM)]
    scale_x: PositiveFloat
    shift: Annotated[int, Field(ge=0, le=64)]
    x_mode: Literal["per-tensor", "per-token"]
    activation_bits: Annotated[int, Field(ge=ACTIVATION_BITS_DEFAULT, le=MAX_ACTIVATION_BITS)]

    @model_validator(mode="after")
    def _nonzero_scaling(self) -> "DequantisationInfo":
        if self.scaling == 0:
            raise ValueError("scaling must be non-zero")
        return self

    def dequantisation(self, d_out: int) -> Dequantisation:
        if len(self.scale_B) not in (1, d_out):
            raise ValueError(f"scale_B has {len(self.scale_B)} entries; expected 1 or d_out = {d_out}")
        scale_B = tuple(self.scale_B) if len(self.scale_B) == d_out else tuple(self.scale_B) * d_out
        return Dequantisation(self.scaling, self.scale_A, scale_B, self.scale_x, self.shift, x_mode=self.x_mode,
                              activation_bits=self.activation_bits)

    @classmethod
    def of(cls, d: Dequantisation) -> "DequantisationInfo":
        shared = len(set(d.scale_B)) == 1
        return cls(scaling=d.scaling, scale_A=d.scale_A, scale_B=[d.scale_B[0]] if shared else list(d.scale_B),
                   scale_x=d.scale_x, shift=d.shift, x_mode=d.x_mode.value, activation_bits=d.activation_bits)


class ModuleInfo(Message):
    """One served LoRA module: its place in the base model, peft's parameters, its statement and dequantisation."""

    name: ModuleName
    adapter: Annotated[str, StringConstraints(max_length=64)]
    base_layer: Literal["Linear", "Conv1D"]
    d_in: Annotated[int, Field(ge=1, le=MAX_DIM)]
    d_out: Annotated[int, Field(ge=1, le=MAX_DIM)]
    rank: Annotated[int, Field(ge=1, le=MAX_RANK)]
    lora_alpha: Annotated[float, Field(allow_inf_nan=False)]
    scaling: Annotated[float, Field(allow_inf_nan=False)]
    use_rslora: bool
    statement: StatementTemplate
    dequantisation: DequantisationInfo

    @model_validator(mode="after")
    def _consistent(self) -> "ModuleInfo":
        s, d = self.statement, self.dequantisation
        if (s.d_in, s.d_out, s.rank) != (self.d_in, self.d_out, self.rank):
            raise ValueError(f"module {self.name}: statement shape differs from the module's")
        if d.shift != s.shift or len(d.scale_B) not in (1, self.d_out) or not math.isclose(d.scaling, self.scaling) \
                or d.activation_bits != s.activation_bits:
            raise ValueError(f"module {self.name}: dequantisation (shift, scale_B length, scaling, activation width) "
                             "differs from the statement's")
        return self

    def x_specs(self, tokens: int | None = None, max_tokens: int = 1) -> dict[str, TensorSpec]:
        """The request's tensors: x_q, T × d_in (I8, or I16 for activations wider than 8 bits), 1 ≤ T ≤ max_tokens
        (or exactly `tokens`); with per-token scales also x_scales (F64, T): each token's scale, from which the
        server computes the `delta` it returns (the proof is about x_q alone)."""
        rows = Dim.exactly(tokens) if tokens is not None else Dim(1, max_tokens)
        dtype = "I8" if self.dequantisation.activation_bits <= 8 else "I16"
        specs = {"x_q": TensorSpec(dtype, (rows, Dim.exactly(self.d_in)))}
        if self.dequantisation.x_mode == "per-token":
            specs["x_scales"] = TensorSpec("F64", (rows,))
        return specs

    def y_specs(self, tokens: int) -> dict[str, TensorSpec]:
        """The answer's tensors: y_q (int32) and its dequantised delta (float64), both T × d_out."""
        shape = (Dim.exactly(tokens), Dim.exactly(self.d_out))
        return {"y_q": TensorSpec("I32", shape), "delta": TensorSpec("F64", shape)}


class Limits(Message):
    """The server's bounds: requests beyond them get a 4xx answer (408, 413, 422, 429) and the server keeps serving;
    connections beyond them are closed (specs/protocol.md, "Bounds and errors"). "Per client": per bearer token, or
    per peer address without auth."""

    max_body_bytes: Annotated[int, Field(ge=1)]
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)]
    max_queue: Annotated[int, Field(ge=1)]
    max_queue_per_client: Annotated[int, Field(ge=1)]
    max_concurrent_requests: Annotated[int, Field(ge=1)]
    max_concurrent_per_client: Annotated[int, Field(ge=1)]
    request_timeout_seconds: Seconds
    body_min_bytes_per_second: Annotated[int, Field(ge=1)]
    """A body of n bytes must arrive within body_grace_seconds + n / this (and request_timeout_seconds)."""
    body_grace_seconds: Seconds
    body_idle_timeout_seconds: Seconds
    max_connections: Annotated[int, Field(ge=1)]
    max_connections_per_ip: Annotated[int, Field(ge=1)]
    header_timeout_seconds: Seconds
    keep_alive_timeout_seconds: Seconds
    exchange_timeout_seconds: Seconds
    prove_timeout_seconds: Seconds
    max_wait_seconds: Seconds
    result_ttl_seconds: Seconds
    max_results: Annotated[int, Field(ge=1)]
    max_result_bytes: Annotated[int, Field(ge=1)]
    max_results_per_client: Annotated[int, Field(ge=1)]
    max_result_bytes_per_client: Annotated[int, Field(ge=1)]


class ProverInfo(Message):
    """Where proofs run: a local process pool or Ray tasks, and how many at once."""

    kind: Literal["process", "ray"]
    workers: Annotated[int, Field(ge=1, le=4096)]


class BatchingInfo(Message):
    """How the server groups a session's queued calls of one module into one proof of stacked rows."""

    enabled: bool
    window_seconds: Seconds
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)]


class Manifest(Message):
    """Everything a client needs before its first call; what it must pin is the `AdapterCommitment` it names."""

    format: Literal["zkref-protocol/2"]
    backend: BackendInfo
    base_model: BaseModelInfo
    calibration: CalibrationInfo
    statement_ids: Text
    modules: Annotated[list[ModuleInfo], Field(min_length=1, max_length=MAX_MODULES)]
    limits: Limits
    prover: ProverInfo
    auth: Literal["none", "bearer"]
    commitment_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    batching: BatchingInfo

    @model_validator(mode="after")
    def _unique_modules(self) -> "Manifest":
        names = [m.name for m in self.modules]
        if len(names) != len(set(names)):
            raise ValueError("module names must be unique")
        return self

    def module(self, name: str) -> ModuleInfo | None:
        return next((m for m in self.modules if m.name == name), None)


# ----------------------------------------------------------------------------------------------------------------------
# Round 1: anchors
# ----------------------------------------------------------------------------------------------------------------------

class AnchorInfo(Message):
    """`backends.base.AdapterAnchor` on the wire."""

    backend: Literal["zkref", "ezkl"]
    statement_id: StatementId
    vk_hash: ShortStr | None
    commitment: ShortStr | None
    digest: Annotated[str, StringConstraints(pattern=HEX_FELT)] | None

    def anchor(self) -> AdapterAnchor:
        return AdapterAnchor(backend=self.backend, statement_id=self.statement_id, vk_hash=self.vk_hash,
                             commitment=self.commitment, digest=self.digest)

    @classmethod
    def of(cls, anchor: AdapterAnchor) -> "AnchorInfo":
        return cls(**anchor.to_json())


class AnchorStatus(Message):
    """One anchor of the published `AdapterCommitment` (served from memory; never computed on request)."""

    module: ModuleName
    tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)]
    statement_id: StatementId
    status: Literal["pending", "done", "failed"]
    anchor: AnchorInfo | None
    reason: Reason


class ModuleCommitment(Message):
    """One module as committed: its statement, its dequantisation and one anchor per allowed T (`tokens` order)."""

    name: ModuleName
    statement: StatementTemplate
    dequantisation: DequantisationInfo
    anchors: Annotated[list[AnchorInfo], Field(min_length=1, max_length=MAX_BUCKETS)]


class AdapterCommitment(Message):
    """What a contributor commits to once, before any call, and every client pins: the base model, the token counts
    calls are proven at (a call of T tokens is proven at the smallest allowed T' ≥ T, its rows padded with zeros, or
    stacked with the session's other calls of the module), and per module the statement, the float dequantisation
    (so a delta cannot be rescaled later) and the adapter anchor of every allowed T.

    Named by `id`, SHA-256 over its canonical JSON: a client given a previously published file (`zkref client
    --anchors FILE`) refuses a contributor whose commitment differs in any byte. Every anchor must name the statement
    its template gives for its T and pin what that statement's binding needs (`backends.base.anchor_gap`).
    """

    format: Literal["zkref-adapter-commitment/1"]
    backend: Literal["zkref", "ezkl"]
    base_model: BaseModelInfo
    tokens: Annotated[list[Annotated[int, Field(ge=1, le=MAX_TOKENS)]], Field(min_length=1, max_length=MAX_BUCKETS)]
    modules: Annotated[list[ModuleCommitment], Field(min_length=1, max_length=MAX_MODULES)]

    @model_validator(mode="after")
    def _consistent(self) -> "AdapterCommitment":
        if self.tokens != sorted(set(self.tokens)):
            raise ValueError("tokens must be strictly increasing")
        names = [mod.name for mod in self.modules]
        if len(names) != len(set(names)):
            raise ValueError("module names must be unique")
        for mod in self.modules:
            if len(mod.anchors) != len(self.tokens):
                raise ValueError(f"module {mod.name}: one anchor per allowed T is required")
            if mod.dequantisation.shift != mod.statement.shift or \
                    mod.dequantisation.activation_bits != mod.statement.activation_bits:
                raise ValueError(f"module {mod.name}: the dequantisation's shift or activation width differs from the "
                                 "statement's")
            if len(mod.dequantisation.scale_B) not in (1, mod.statement.d_out):
                raise ValueError(f"module {mod.name}: scale_B must have 1 or d_out entries")
            for tokens, info in zip(self.tokens, mod.anchors):
                statement = mod.statement.statement(tokens)
                gap = anchor_gap(statement, info.anchor(), backend=self.backend)
                if gap:
                    raise ValueError(f"module {mod.name} at T={tokens}: {gap}")
        return self

    @property
    def id(self) -> str:
        """SHA-256 (64 hex digits) of the canonical JSON: sorted keys, no spaces."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode("utf-8")

    def bucket(self, tokens: int) -> int | None:
        """The allowed T a call of `tokens` rows is proven at (None when it exceeds the largest)."""
        return next((t for t in self.tokens if t >= tokens), None)

    def module(self, name: str) -> ModuleCommitment | None:
        return next((mod for mod in self.modules if mod.name == name), None)

    def anchor(self, name: str, tokens: int) -> AdapterAnchor:
        """The pinned anchor of module `name` at an allowed T (KeyError otherwise)."""
        mod = self.module(name)
        if mod is None or tokens not in self.tokens:
            raise KeyError(f"no committed anchor for {name} at T={tokens}")
        return mod.anchors[self.tokens.index(tokens)].anchor()


# ----------------------------------------------------------------------------------------------------------------------
# Rounds 2 and 3: a call and its proof
# ----------------------------------------------------------------------------------------------------------------------

class CallAccepted(Message):
    """The answer to a call, at once: the proven output y_q and its dequantisation (safetensors, base64); the proof
    follows under `call_id` (its statement is known when it is proven: see `ProofScope`)."""

    call_id: CallId
    module: ModuleName
    tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)]
    status: Literal["pending"]
    tensors: Annotated[str, StringConstraints(max_length=MAX_TENSORS_B64)]
    """safetensors: y_q (I32, T × d_out) and delta = dequantise(y_q) (F64, T × d_out)."""


class ProofMessage(Message):
    """`backends.base.Proof` on the wire: bytes base64, instances as EZKL felt strings (64 hex, little-endian).

    `vk` may be empty: the server then serves the verifying key once by its hash (`GET /v1/keys/{vk_hash}`; EZKL's
    is hundreds of KB, the same for every proof of a module at one T, and the client pins its hash anyway)."""

    backend: Literal["zkref", "ezkl"]
    statement_id: StatementId
    instances: Annotated[list[Annotated[str, StringConstraints(pattern=FELT_STR)]], Field(max_length=MAX_INSTANCES)]
    data: Annotated[str, StringConstraints(max_length=MAX_B64_PROOF)]
    zero_knowledge: bool
    vk: Annotated[str, StringConstraints(max_length=MAX_B64_PROOF)]
    vk_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None
    settings: dict[str, Any]
    commitments: Annotated[dict[Annotated[str, StringConstraints(max_length=64)], ShortStr], Field(max_length=16)]
    meta: dict[str, Any]

    def proof(self) -> Proof:
        """The `Proof` (ValueError if a field does not decode)."""
        return Proof(backend=self.backend, statement_id=self.statement_id,
                     instances=tuple(felt_from_str(v) for v in self.instances),
                     data=b64decode(self.data, "proof data", MAX_PROOF_BYTES), zero_knowledge=self.zero_knowledge,
                     vk=b64decode(self.vk, "verifying key", MAX_PROOF_BYTES), vk_hash=self.vk_hash,
                     settings=dict(self.settings), commitments=dict(self.commitments), meta=dict(self.meta))

    @classmethod
    def of(cls, proof: Proof) -> "ProofMessage":
        return cls(backend=proof.backend, statement_id=proof.statement_id,
                   instances=[felt_to_str(v) for v in proof.instances], data=b64encode(proof.data),
                   zero_knowledge=proof.zero_knowledge, vk=b64encode(proof.vk), vk_hash=proof.vk_hash,
                   settings=dict(proof.settings), commitments=dict(proof.commitments), meta=dict(proof.meta))


class WorkerInfo(Message):
    """Where a proof ran: "process" (the local pool) or "ray", the host and the worker's process id."""

    kind: Literal["process", "ray"]
    host: Annotated[str, StringConstraints(max_length=255)]
    pid: Annotated[int, Field(ge=0)]


CallState = Literal["pending", "running", "done", "failed"]


class ScopeRows(Message):
    """The rows one call occupies in a proof: rows start … start + tokens − 1 of its x and y."""

    call_id: CallId
    start: Annotated[int, Field(ge=0, lt=MAX_TOKENS)]
    tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)]


class ProofScope(Message):
    """What one proof covers: the statement of `tokens` rows (an allowed T of the commitment) whose x and y are the
    listed calls' rows stacked in order, every other row zero (padding). One proof may answer several calls."""

    module: ModuleName
    tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)]
    statement_id: StatementId
    calls: Annotated[list[ScopeRows], Field(min_length=1, max_length=MAX_SCOPE_CALLS)]

    @model_validator(mode="after")
    def _rows(self) -> "ProofScope":
        end = 0
        for rows in self.calls:
            if rows.start != end:
                raise ValueError("calls must occupy consecutive rows from row 0")
            end = rows.start + rows.tokens
        if end > self.tokens:
            raise ValueError(f"the calls' {end} rows exceed the statement's {self.tokens}")
        if len({r.call_id for r in self.calls}) != len(self.calls):
            raise ValueError("a call appears twice")
        return self


class CallStatus(Message):
    """A call's proof: pending (queued), running, done (with the proof and its scope) or failed (with the reason)."""

    call_id: CallId
    module: ModuleName
    tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)]
    status: CallState
    reason: Reason
    proof: ProofMessage | None
    scope: ProofScope | None
    worker: WorkerInfo | None
    timings: Annotated[dict[Annotated[str, StringConstraints(max_length=64)], Seconds], Field(max_length=32)]

    @model_validator(mode="after")
    def _proof_iff_done(self) -> "CallStatus":
        if (self.status == "done") != (self.proof is not None) or (self.proof is None) != (self.scope is None):
            raise ValueError("a proof and its scope are present exactly when the status is done")
        if self.scope is not None:
            mine = [r for r in self.scope.calls if r.call_id == self.call_id]
            if len(mine) != 1 or mine[0].tokens != self.tokens or self.scope.module != self.module:
                raise ValueError("the proof's scope does not hold this call's rows")
        return self


# ----------------------------------------------------------------------------------------------------------------------
# Errors and health
# ----------------------------------------------------------------------------------------------------------------------

class ErrorBody(Message):
    status: Annotated[int, Field(ge=400, le=599)]
    code: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,64}$")]
    message: Reason


class ErrorResponse(Message):
    """Every refused request: a 4xx status and this body (a 5xx would be a server bug)."""

    error: ErrorBody


class Health(Message):
    status: Literal["ok"]
    queued: Annotated[int, Field(ge=0)]
    running: Annotated[int, Field(ge=0)]
    stored_calls: Annotated[int, Field(ge=0)]
    stored_bytes: Annotated[int, Field(ge=0)]
    evicted_calls: Annotated[int, Field(ge=0)]

