"""The backend switch: one protocol every prover of a `LoRAStatement` implements, and the checks they all share.

A backend proves a statement for a witness and verifies a proof against the public values the verifier holds:

    supports(statement) -> Support                  yes, or no with the reason
    anchor(statement, witness) -> AdapterAnchor     what the contributor publishes once to bind its adapter
    prove(statement, witness) -> ProofResult        public values + proof (+ per-phase timings)
    verify(statement, public, proof, anchor=…) -> Verdict   never raises on a bad proof; falsy with the reason

and the same four for a `LoRABatch` (several statements, one proof): `supports_batch`, `anchor_batch`,
`prove_batch`, `verify_batch`. `verify` first runs `check_binding` (the proof is for THIS statement, for exactly
these public values, and the values are integers in their declared ranges), then the backend's own cryptographic
check.
"""
from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from zkref.lora.batch import LoRABatch, batch_instance_offsets, encode_batch_instances
from zkref.lora.statement import (AdapterBinding, LoRAPublic, LoRAStatement, LoRAWitness, check_public,
                                   encode_instances)

Progress = Callable[[str], None]
"""Called with a phase name ("settings", "compile", "setup", "witness", "prove", "verify") as it starts."""

MAX_PROOF_BYTES = 64 << 20
"""No proof of any supported statement comes near this: larger proof data is refused before it is parsed."""


@dataclass(frozen=True)
class Support:
    """Whether a backend can prove a statement, and if not, why."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Verdict:
    """The outcome of a verification: truthy only when valid; `reason` says what failed (or what was checked)."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, kw_only=True)
class AdapterAnchor:
    """What binds the adapter outside the instances, published once by the contributor and pinned by verifiers.

    vk_hash: SHA-256 of the verifying key (a fixed adapter is part of the circuit, so of the vk).
    commitment: the adapter's KZG commitment (polycommit), hex.
    digest: the adapter's Poseidon digest (hashed bindings), 0x-hex: the public value every proof must carry.
    An unbound adapter is bound by nothing.
    """

    backend: str
    statement_id: str
    vk_hash: str | None = None
    commitment: str | None = None
    digest: str | None = None

    FIELDS = ("backend", "statement_id", "vk_hash", "commitment", "digest")

    def to_json(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    @classmethod
    def from_json(cls, data: object) -> "AdapterAnchor":
        if not isinstance(data, dict) or set(data) != set(cls.FIELDS):
            raise ValueError(f"an adapter anchor must have keys {', '.join(cls.FIELDS)}")
        for key, value in data.items():
            if value is not None and (not isinstance(value, str) or len(value) > 4096):
                raise ValueError(f"adapter anchor field {key} must be a short string or null")
        return cls(**data)


@dataclass(frozen=True, kw_only=True, eq=False)
class Proof:
    """A backend's proof of one statement for one public-instance vector, with what is needed to check it.

    data: the backend's proof bytes (EZKL: its proof JSON); vk: the verifying key bytes (checked against `vk_hash`
    and, when given, the verifier's pinned anchor); settings: the backend's circuit settings (JSON object).
    """

    backend: str
    statement_id: str
    instances: tuple[int, ...]
    data: bytes
    zero_knowledge: bool
    vk: bytes = b""
    vk_hash: str | None = None
    settings: dict = field(default_factory=dict)
    commitments: dict[str, str] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ProofResult:
    """What `prove` returns: the statement's public values, the proof, and seconds per phase."""

    public: LoRAPublic
    proof: Proof
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class BatchProofResult:
    """What `prove_batch` returns: each member's public values (in member order), the one proof, seconds per phase."""

    publics: tuple[LoRAPublic, ...]
    proof: Proof
    timings: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A prover and verifier of LoRA statements."""

    name: str
    zero_knowledge: bool

    def supports(self, statement: LoRAStatement) -> Support: ...

    def anchor(self, statement: LoRAStatement, witness: LoRAWitness) -> AdapterAnchor: ...

    def prove(self, statement: LoRAStatement, witness: LoRAWitness, *,
              progress: Progress | None = None) -> ProofResult: ...

    def verify(self, statement: LoRAStatement, public: LoRAPublic, proof: Proof, *,
               anchor: AdapterAnchor | None) -> Verdict: ...

    def supports_batch(self, batch: LoRABatch) -> Support: ...

    def anchor_batch(self, batch: LoRABatch, witnesses: Sequence[LoRAWitness]) -> AdapterAnchor: ...

    def prove_batch(self, batch: LoRABatch, witnesses: Sequence[LoRAWitness], *,
                    progress: Progress | None = None) -> BatchProofResult: ...

    def verify_batch(self, batch: LoRABatch, publics: Sequence[LoRAPublic], proof: Proof, *,
                     anchor: AdapterAnchor | None) -> Verdict: ...


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def anchor_gap(statement: LoRAStatement | LoRABatch, anchor: AdapterAnchor | None, *, backend: str) -> str | None:
    """Why `anchor` cannot pin proofs of `statement` with `backend` (None when it can): the one rule every verifier,
    the client and the command line apply before trusting anything.

    An anchor must exist, name this statement (or batch) and backend, and pin what binds the circuit and the adapter:
    always the verifying key's hash (the circuit itself must be pinned: a key the prover chose could check anything),
    and also the KZG commitment for a polycommit adapter and the Poseidon digest for a hashed one.
    """
    if anchor is None:
        return ("no adapter anchor pinned: a proof checked only against the verifying key it carries proves nothing "
                "about the adapter (pin the contributor's published anchor)")
    if not isinstance(anchor, AdapterAnchor):
        return f"not an adapter anchor: {type(anchor).__name__}"
    if anchor.statement_id != statement.id or anchor.backend != backend:
        return "the pinned adapter anchor is for another statement or backend"
    if not anchor.vk_hash:
        return ("the anchor pins no verifying key (vk_hash), so any circuit, and any adapter, would pass: refused")
    binding = (statement.members[0] if isinstance(statement, LoRABatch) else statement).adapter_binding
    if binding is AdapterBinding.POLYCOMMIT and not anchor.commitment:
        return ("the anchor pins no adapter commitment, and a polycommit adapter is bound by nothing else (its "
                "verifying key holds no adapter values)")
    if binding in (AdapterBinding.HASHED, AdapterBinding.HASHED_PACKED) and not anchor.digest:
        return "the anchor pins no adapter digest, and a hashed adapter is bound by nothing else"
    return None


def check_binding(backend: str, statement: LoRAStatement | LoRABatch, public: LoRAPublic | Sequence[LoRAPublic],
                  proof: Proof, anchor: AdapterAnchor | None) -> Verdict:
    """The checks every backend makes before its cryptography: right backend and statement (or batch), exactly the
    caller's public values (length included), values in range, a verifying key matching its hash, and a pinned anchor
    (`anchor_gap`: none, or one that pins too little, is refused) that the proof's key and commitments match."""
    if not isinstance(proof, Proof):
        return Verdict(False, f"not a proof object: {type(proof).__name__}")
    if proof.backend != backend:
        return Verdict(False, f"proof was made by backend {proof.backend!r}, not {backend!r}")
    if proof.statement_id != statement.id:
        return Verdict(False, f"proof is for statement {proof.statement_id}, not {statement.id} "
                              "(shape, shift, bit widths, bindings or batch members differ)")
    if len(proof.data) > MAX_PROOF_BYTES:
        return Verdict(False, f"proof data of {len(proof.data)} bytes exceeds {MAX_PROOF_BYTES}")
    try:
        if isinstance(statement, LoRABatch):
            expected = encode_batch_instances(statement, tuple(public))
        else:
            check_public(statement, public)
            expected = encode_instances(statement, public)
    except (ValueError, TypeError) as exc:
        return Verdict(False, f"public values do not fit the statement: {exc}")
    if len(proof.instances) != len(expected):
        return Verdict(False, f"proof carries {len(proof.instances)} public instances, the statement has "
                              f"{len(expected)}")
    if list(proof.instances) != expected:
        first = next(i for i, (a, b) in enumerate(zip(proof.instances, expected)) if a != b)
        where = ""
        if isinstance(statement, LoRABatch):        # name the member whose values differ
            member = bisect.bisect_right(batch_instance_offsets(statement), first) - 1
            where = f", in member {statement.names[member]}"
        return Verdict(False, f"proof's public instances differ from the values held (first at index {first}{where})")
    if proof.vk_hash is not None and sha256_hex(proof.vk) != proof.vk_hash:
        return Verdict(False, "verifying key does not match its recorded hash")
    gap = anchor_gap(statement, anchor, backend=backend)
    if gap:
        return Verdict(False, gap)
    if anchor.vk_hash != sha256_hex(proof.vk):                # the key the proof is checked with, whatever it claims
        return Verdict(False, "verifying key differs from the pinned one (another adapter or circuit)")
    if anchor.commitment is not None and proof.commitments.get("adapter") != anchor.commitment:
        return Verdict(False, "adapter commitment differs from the pinned one (another adapter)")
    if anchor.digest is not None and (isinstance(statement, LoRABatch) or public.adapter_digest is None
                                      or f"0x{public.adapter_digest:064x}" != anchor.digest):
        return Verdict(False, "adapter digest differs from the pinned one (another adapter)")
    return Verdict(True, "binding checks passed")


def canonical_json(obj: object) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces): what hashes and bundles are computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")
