"""Several LoRA statements proven as one: their conjunction, in one circuit and one proof.

The design note's "proof aggregation" future work, without recursion: e.g. every adapted module of one layer for one
call (q, k, v of a Llama layer share their input) become one circuit, so the per-proof costs — the fixed columns and
tables, the permutation, the opening proof, one verification — are paid once. A `LoRABatch` names its members and
fixes their order; its id covers every member's canonical statement. Public values and instances are the members'
in member order. Spec: specs/lora-circuit.md, "Batches".
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from zkref.lora.statement import (ID_HEX_CHARS, LoRAPublic, LoRAStatement, LoRATrace, LoRAWitness, check_public,
                                  encode_instances, evaluate, instance_length, public_values)

BATCH_FORMAT = "zkref-lora-batch/1"
MAX_MEMBERS = 64
"""A layer of the largest models has at most a handful of adapted modules; 64 bounds what a batch may allocate."""
_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,200}")


@dataclass(frozen=True)
class LoRABatch:
    """Named LoRA statements proven together (their conjunction): one circuit, one proof, one verification."""

    names: tuple[str, ...]
    members: tuple[LoRAStatement, ...]

    def __post_init__(self) -> None:
        names, members = tuple(self.names), tuple(self.members)
        if not members or len(members) > MAX_MEMBERS:
            raise ValueError(f"a batch has 1..{MAX_MEMBERS} members, got {len(members)}")
        if len(names) != len(members):
            raise ValueError(f"{len(names)} names for {len(members)} statements")
        if len(set(names)) != len(names) or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names):
            raise ValueError("member names must be distinct module names (letters, digits, _ . - [ ])")
        if not all(isinstance(m, LoRAStatement) for m in members):
            raise ValueError("batch members must be LoRAStatements")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "members", members)

    @classmethod
    def of(cls, named: Sequence[tuple[str, LoRAStatement]]) -> "LoRABatch":
        return cls(tuple(n for n, _ in named), tuple(s for _, s in named))

    def canonical(self) -> dict:
        return {"format": BATCH_FORMAT,
                "members": [{"name": n, "statement": s.canonical()} for n, s in zip(self.names, self.members)]}

    @functools.cached_property
    def id(self) -> str:
        """128 bits of SHA-256 over the canonical encoding: changes with any member, name or the order."""
        data = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode("ascii")
        return hashlib.sha256(data).hexdigest()[:ID_HEX_CHARS]

    @classmethod
    def from_canonical(cls, data: object) -> "LoRABatch":
        """Decode `canonical()` output strictly."""
        if not isinstance(data, dict) or set(data) != {"format", "members"} or data["format"] != BATCH_FORMAT:
            raise ValueError(f"a batch must be a {BATCH_FORMAT} object with members")
        members = data["members"]
        if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
            raise ValueError(f"a batch has 1..{MAX_MEMBERS} members")
        if not all(isinstance(m, dict) and set(m) == {"name", "statement"} for m in members):
            raise ValueError("each batch member must be an object with name and statement")
        return cls(tuple(m["name"] for m in members),
                   tuple(LoRAStatement.from_canonical(m["statement"]) for m in members))

    def describe(self) -> str:
        return f"batch of {len(self.members)} [id {self.id}]: " + "; ".join(
            f"{n}: {s.describe()}" for n, s in zip(self.names, self.members))

    def check_witnesses(self, witnesses: Sequence[LoRAWitness]) -> None:
        if len(witnesses) != len(self.members):
            raise ValueError(f"{len(witnesses)} witnesses for a batch of {len(self.members)}")
        for name, statement, witness in zip(self.names, self.members, witnesses):
            try:
                statement.check_witness(witness)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None


def evaluate_batch(batch: LoRABatch, witnesses: Sequence[LoRAWitness]) -> tuple[LoRATrace, ...]:
    """Each member's `evaluate`: the semantics of a batch is that of its members."""
    batch.check_witnesses(witnesses)
    return tuple(evaluate(s, w) for s, w in zip(batch.members, witnesses))


def batch_public_values(batch: LoRABatch, witnesses: Sequence[LoRAWitness]) -> tuple[LoRAPublic, ...]:
    batch.check_witnesses(witnesses)
    return tuple(public_values(s, w) for s, w in zip(batch.members, witnesses))


def check_batch_public(batch: LoRABatch, publics: Sequence[LoRAPublic]) -> None:
    if len(publics) != len(batch.members):
        raise ValueError(f"{len(publics)} public values for a batch of {len(batch.members)}")
    for name, statement, public in zip(batch.names, batch.members, publics):
        try:
            check_public(statement, public)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None


def encode_batch_instances(batch: LoRABatch, publics: Sequence[LoRAPublic]) -> list[int]:
    """The members' instance vectors, concatenated in member order."""
    check_batch_public(batch, publics)
    out: list[int] = []
    for statement, public in zip(batch.members, publics):
        out.extend(encode_instances(statement, public))
    return out


def batch_instance_offsets(batch: LoRABatch) -> tuple[int, ...]:
    """Where each member's instances start in the batch's vector."""
    offsets, at = [], 0
    for statement in batch.members:
        offsets.append(at)
        at += instance_length(statement)
    return tuple(offsets)
