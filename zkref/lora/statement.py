"""The LoRA statement: what is proven, independent of any circuit layout or backend (the one executable semantics).

    z   = x_q · A_qᵀ                                      (T × r, exact integers)
    z_q = clamp(round_half_away(z / 2^shift), int{z_bits}) (requantised in-circuit; int8 unless declared wider)
    y_q = z_q · B_qᵀ                                      (T × d_out, exact integers)

with lora_A quantised r × d_in and lora_B d_out × r (PEFT's layout), int4 weights and int8 activations. The base
output W x and the dequantisation (scales, peft's scaling s) stay outside: a verifier applies them to y_q.

A `LoRAStatement` is everything a verifier must agree on before looking at a proof: shapes, the shift (never
calibrated at proving time: whoever picks the shift picks the output scale), bit widths (weights, and z_q's clamp
width `z_bits`) and how x, the adapter and
y are bound. Its `id` names it in proof bundles, manifests and caches. zkref's circuits (zkref.lora.circuit) and
every backend consume it; `evaluate` is the reference every one of them must reproduce bit for bit.
Spec: specs/lora-circuit.md, "The statement".
"""
from __future__ import annotations

import enum
import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from zkref.lora.commitments import activations_digest, adapter_digest, requant_constants
from zkref.primitives.field import P, signed
from zkref.primitives.packing import elements_needed
from zkref.primitives.quant import requantize
from zkref.primitives.ranges import (ACTIVATION_BITS_DEFAULT, MAX_ACTIVATION_BITS, MAX_DIM, MAX_RANK, MAX_TOKENS,
                                     Z_BITS_DEFAULT, IntRange, as_int_matrix, check_activation_bits, check_int,
                                     check_shift, check_z_bits)

FORMAT = "zkref-lora-statement/1"
"""Version tag of the canonical encoding; part of every statement id."""
SUPPORTED_WEIGHT_BITS = (4, 8, 12, 16)
"""Weight precisions a statement may declare: int4 (the design note's), int8 (~16× less rounding error), int12, int16."""
ACTIVATION_BITS = ACTIVATION_BITS_DEFAULT
"""The default activation width (the canonical encoding has always carried it: a wider one changes the id)."""
ID_HEX_CHARS = 32
"""Statement ids are the first 128 bits of SHA-256 over the canonical encoding."""
TENSOR_BYTES_PER_VALUE = 32
"""What one value of a call's tensors costs a prover's process, at most: 8-byte copies as float input, int64
quantised, in the evaluated trace and in the float comparison (`LoRAShape.tensor_bytes`)."""
REQUANT_RULE = "round-half-away-then-clamp-int{}"
"""The canonical encoding's name of the requantisation rule; it carries z_q's clamp width (`LoRAStatement.z_bits`),
so a statement with the default int8 intermediate encodes exactly as before z_bits existed (its id is unchanged)."""


def requant_rule(z_bits: int) -> str:
    """The canonical name of the requantisation rule for a `z_bits`-wide intermediate."""
    return REQUANT_RULE.format(check_z_bits(z_bits))


def parse_requant_rule(rule: object) -> int:
    """z_bits from the canonical rule name; ValueError unless it is exactly `requant_rule(z_bits)` for a supported
    width (no leading zeros or other spellings: one statement, one encoding)."""
    prefix = REQUANT_RULE.format("")
    if isinstance(rule, str) and rule.startswith(prefix) and rule[len(prefix):].isdigit() \
            and rule[len(prefix):].isascii():
        bits = int(rule[len(prefix):])
        try:
            if requant_rule(bits) == rule:
                return bits
        except ValueError:
            pass
    raise ValueError(f"statement requantisation rule {rule!r} is not one this version proves "
                     f"({requant_rule(Z_BITS_DEFAULT)} … {requant_rule(16)})")


class ActivationBinding(str, enum.Enum):
    """How the activations x_q are tied to the proof."""

    PUBLIC = "public"                  # x_q itself is in the public instance
    HASHED = "hashed"                  # Poseidon over x_q, one felt per value (EZKL's "hashed" input) is public
    HASHED_PACKED = "hashed-packed"    # Poseidon over pack(x_q, 8) is public (zkref only: packing proven in-circuit)
    POLYCOMMIT = "polycommit"          # a KZG commitment the verifier, who knows x_q, computes itself (EZKL)


class AdapterBinding(str, enum.Enum):
    """How the quantised adapter (A_q, B_q) is tied to the proof."""

    FIXED = "fixed"                    # constants of the circuit: bound by the verifying key
    HASHED = "hashed"                  # Poseidon over the adapter message is public (EZKL's "hashed" params)
    HASHED_PACKED = "hashed-packed"    # Poseidon over the packed adapter is public (zkref only)
    POLYCOMMIT = "polycommit"          # a KZG commitment published once by the contributor (EZKL)
    UNBOUND = "unbound"                # private and bound to nothing: ANY adapter satisfies the proof

    @property
    def bound(self) -> bool:
        return self is not AdapterBinding.UNBOUND


class OutputBinding(str, enum.Enum):
    """How the output y_q is tied to the proof."""

    PUBLIC = "public"                  # y_q is in the public instance
    POLYCOMMIT = "polycommit"          # a KZG commitment the verifier, who received y_q, computes itself (EZKL)


HASHED_ACTIVATIONS = (ActivationBinding.HASHED, ActivationBinding.HASHED_PACKED)
HASHED_ADAPTERS = (AdapterBinding.HASHED, AdapterBinding.HASHED_PACKED)


@dataclass(frozen=True, kw_only=True)
class LoRAShape:
    """Shapes of one adapted module and one call: d_in → d_out at rank r, for T tokens."""

    d_in: int
    d_out: int
    rank: int
    tokens: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "d_in", check_int("d_in", self.d_in, 1, MAX_DIM))
        object.__setattr__(self, "d_out", check_int("d_out", self.d_out, 1, MAX_DIM))
        object.__setattr__(self, "rank", check_int("rank", self.rank, 1, MAX_RANK))
        object.__setattr__(self, "tokens", check_int("tokens", self.tokens, 1, MAX_TOKENS))

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the two products: T·(r·d_in + d_out·r)."""
        return self.tokens * self.rank * (self.d_in + self.d_out)

    @property
    def values(self) -> int:
        """Values of the call's tensors: A (r×d_in), B (d_out×r), x (T×d_in), z (T×r), y (T×d_out)."""
        return self.rank * (self.d_in + self.d_out) + self.tokens * (self.d_in + self.rank + self.d_out)

    @property
    def tensor_bytes(self) -> int:
        """Memory the call's tensors take in a prover's process (`TENSOR_BYTES_PER_VALUE` per value): checked
        against `MEMORY_BUDGET` before they are allocated; a backend's circuit comes on top."""
        return TENSOR_BYTES_PER_VALUE * self.values

    @property
    def x_shape(self) -> tuple[int, int]:
        return (self.tokens, self.d_in)

    @property
    def y_shape(self) -> tuple[int, int]:
        return (self.tokens, self.d_out)

    @property
    def a_shape(self) -> tuple[int, int]:
        return (self.rank, self.d_in)

    @property
    def b_shape(self) -> tuple[int, int]:
        return (self.d_out, self.rank)

    def __str__(self) -> str:
        return f"{self.d_in}→{self.d_out} r={self.rank} T={self.tokens}"


@dataclass(frozen=True, kw_only=True)
class LoRAStatement:
    """Everything a verifier agrees on before looking at a proof; `LoRAStatement(shape=…, shift=…)` is complete."""

    shape: LoRAShape
    shift: int
    x_binding: ActivationBinding = ActivationBinding.PUBLIC
    adapter_binding: AdapterBinding = AdapterBinding.FIXED
    y_binding: OutputBinding = OutputBinding.PUBLIC
    weight_bits: int = 4
    z_bits: int = Z_BITS_DEFAULT
    """Clamp width of the requantised intermediate z_q (8..16 bits): wider keeps more of z's precision."""
    activation_bits: int = ACTIVATION_BITS_DEFAULT
    """Width of the activations x_q (8..16 bits)."""

    def __post_init__(self) -> None:
        if not isinstance(self.shape, LoRAShape):
            raise ValueError(f"shape must be a LoRAShape, got {type(self.shape).__name__}")
        object.__setattr__(self, "shift", check_shift(self.shift))
        for name, enum_type in (("x_binding", ActivationBinding), ("adapter_binding", AdapterBinding),
                                ("y_binding", OutputBinding)):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, enum_type(value))
            except ValueError:
                choices = ", ".join(m.value for m in enum_type)
                raise ValueError(f"{name} must be one of {choices}, got {value!r}") from None
        if self.weight_bits not in SUPPORTED_WEIGHT_BITS or isinstance(self.weight_bits, bool):
            raise ValueError(f"weight_bits must be one of {SUPPORTED_WEIGHT_BITS}, got {self.weight_bits!r}")
        object.__setattr__(self, "z_bits", check_z_bits(self.z_bits))
        object.__setattr__(self, "activation_bits", check_activation_bits(self.activation_bits))

    # -- ranges --------------------------------------------------------------------------------------------------
    @property
    def weight_range(self) -> IntRange:
        return IntRange(self.weight_bits)

    @property
    def activation_range(self) -> IntRange:
        return IntRange(self.activation_bits)

    @property
    def z_range(self) -> IntRange:
        """The range z_q is clamped to."""
        return IntRange(self.z_bits)

    @property
    def z_bounds(self) -> tuple[int, int]:
        """Range of z = A_q·x_q over all admissible A_q and x_q: d_in · [min product, max product]."""
        return _dot_bounds(self.shape.d_in, self.weight_range, self.activation_range)

    @property
    def y_bounds(self) -> tuple[int, int]:
        """Range of y_q = B_q·z_q over all admissible B_q and z_q: rank · [min product, max product]."""
        return _dot_bounds(self.shape.rank, self.weight_range, self.z_range)

    @property
    def hashed_felts(self) -> int:
        """Field elements a Poseidon commitment of this statement absorbs (zkref.lora.commitments' messages): x and
        the adapter message when hashed, fewer when packed; 0 for other bindings."""
        s = self.shape
        x, adapter = s.tokens * s.d_in, s.rank * (s.d_in + s.d_out)
        felts = {ActivationBinding.HASHED: x,
                 ActivationBinding.HASHED_PACKED: elements_needed(x, self.activation_bits)}.get(self.x_binding, 0)
        felts += {AdapterBinding.HASHED: adapter + len(requant_constants(self.shift, self.z_bits)),
                  AdapterBinding.HASHED_PACKED: elements_needed(adapter, self.weight_bits)
                  }.get(self.adapter_binding, 0)
        return felts

    # -- identity ------------------------------------------------------------------------------------------------
    def canonical(self) -> dict:
        """The canonical encoding (a JSON object): format version, shapes, shift, bit widths, binding modes; z_q's
        clamp width is part of the requantisation rule's name (`requant_rule`)."""
        s = self.shape
        return {"format": FORMAT, "d_in": s.d_in, "d_out": s.d_out, "rank": s.rank, "tokens": s.tokens,
                "shift": self.shift, "weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                "requant": requant_rule(self.z_bits), "x_binding": self.x_binding.value,
                "adapter_binding": self.adapter_binding.value, "y_binding": self.y_binding.value}

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode("ascii")

    @functools.cached_property
    def id(self) -> str:
        """A short name for the statement: 128 bits of SHA-256 over `canonical_bytes` (32 hex chars)."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()[:ID_HEX_CHARS]

    @classmethod
    def from_canonical(cls, data: object) -> "LoRAStatement":
        """Decode `canonical()` output strictly: unknown or missing keys, another format or bad values are errors."""
        if not isinstance(data, dict):
            raise ValueError("a statement must be a JSON object")
        expected = set(cls(shape=LoRAShape(d_in=1, d_out=1, rank=1), shift=0).canonical())
        if set(data) != expected:
            missing, extra = sorted(expected - set(data)), sorted(set(data) - expected)
            raise ValueError(f"statement keys differ from {FORMAT}: missing {missing}, unexpected {extra}")
        if data["format"] != FORMAT:
            raise ValueError(f"statement format {data['format']!r} is not {FORMAT!r}")
        bits = data["activation_bits"]
        if isinstance(bits, bool) or not isinstance(bits, int) \
                or not ACTIVATION_BITS_DEFAULT <= bits <= MAX_ACTIVATION_BITS:
            raise ValueError(f"statement activation bits {bits!r} are not ones this version proves "
                             f"({ACTIVATION_BITS_DEFAULT}..{MAX_ACTIVATION_BITS})")
        z_bits = parse_requant_rule(data["requant"])
        shape = LoRAShape(d_in=data["d_in"], d_out=data["d_out"], rank=data["rank"], tokens=data["tokens"])
        return cls(shape=shape, shift=data["shift"], x_binding=data["x_binding"],
                   adapter_binding=data["adapter_binding"], y_binding=data["y_binding"],
                   weight_bits=data["weight_bits"], z_bits=z_bits, activation_bits=bits)

    def describe(self) -> str:
        """One line for people; an unbound adapter is labelled as such wherever a statement is shown."""
        adapter = "adapter UNBOUND (any adapter satisfies it)" if not self.adapter_binding.bound \
            else f"adapter {self.adapter_binding.value}"
        z = "" if self.z_bits == Z_BITS_DEFAULT else f" z_q int{self.z_bits}"
        return (f"LoRA {self.shape} shift={self.shift} int{self.weight_bits}×int{self.activation_bits}{z}: "
                f"x {self.x_binding.value}, "
                f"{adapter}, y {self.y_binding.value} [id {self.id}]")

    # -- witnesses -----------------------------------------------------------------------------------------------
    def check_witness(self, witness: "LoRAWitness") -> None:
        """ValueError unless the witness has this statement's shapes and bit widths."""
        if witness.shape != self.shape:
            raise ValueError(f"witness shape {witness.shape} does not match the statement's {self.shape}")
        for name, arr in (("A_q", witness.A_q), ("B_q", witness.B_q)):
            if not self.weight_range.contains(arr):
                raise ValueError(f"{name} must lie in {self.weight_range} for this statement")
        if not self.activation_range.contains(witness.x_q):
            raise ValueError(f"x_q must lie in {self.activation_range} for this statement")


def _dot_bounds(length: int, w: IntRange, a: IntRange) -> tuple[int, int]:
    products = (w.lo * a.lo, w.lo * a.hi, w.hi * a.lo, w.hi * a.hi)
    return length * min(products), length * max(products)


@dataclass(frozen=True, kw_only=True, eq=False)
class LoRAWitness:
    """The private values: quantised lora_A (r × d_in), lora_B (d_out × r) and activations x_q (T × d_in).

    Validated once on construction (2-D integer matrices, consistent shapes, weights and activations within the
    widest supported precisions, int16); a statement checks its own widths (`LoRAStatement.check_witness`).
    Stored as read-only int64 arrays.
    """

    A_q: np.ndarray
    B_q: np.ndarray
    x_q: np.ndarray

    def __post_init__(self) -> None:
        widest = IntRange(max(SUPPORTED_WEIGHT_BITS))
        A = as_int_matrix("A_q", self.A_q, widest)
        B = as_int_matrix("B_q", self.B_q, widest)
        x = as_int_matrix("x_q", self.x_q, IntRange(MAX_ACTIVATION_BITS))
        if B.shape[1] != A.shape[0]:
            raise ValueError(f"lora_A is r×d_in and lora_B d_out×r: ranks differ (A_q {A.shape}, B_q {B.shape})")
        if x.shape[1] != A.shape[1]:
            raise ValueError(f"x_q must be T×d_in = T×{A.shape[1]}, got shape {x.shape}")
        object.__setattr__(self, "A_q", A)
        object.__setattr__(self, "B_q", B)
        object.__setattr__(self, "x_q", x)
        LoRAShape(d_in=A.shape[1], d_out=B.shape[0], rank=A.shape[0], tokens=x.shape[0])  # limits

    @property
    def shape(self) -> LoRAShape:
        return LoRAShape(d_in=self.A_q.shape[1], d_out=self.B_q.shape[0], rank=self.A_q.shape[0],
                         tokens=self.x_q.shape[0])

    def with_activations(self, x_q: np.ndarray) -> "LoRAWitness":
        """The same adapter with other activations (one call of a served module)."""
        return LoRAWitness(A_q=self.A_q, B_q=self.B_q, x_q=x_q)


@dataclass(frozen=True, eq=False)
class LoRATrace:
    """Every intermediate of `evaluate`: z (T × r), z_q (T × r), y_q (T × d_out), and how many z_q were clamped."""

    z: np.ndarray
    z_q: np.ndarray
    y_q: np.ndarray
    clamped: int


def evaluate(statement: LoRAStatement, witness: LoRAWitness) -> LoRATrace:
    """THE semantics of the statement in plain integers: every circuit and backend must reproduce it exactly."""
    statement.check_witness(witness)
    z = witness.x_q @ witness.A_q.T
    rq = requantize(z, statement.shift, statement.z_bits)
    y = rq.z_q @ witness.B_q.T
    for arr in (z, rq.z_q, y):
        arr.setflags(write=False)
    return LoRATrace(z, rq.z_q, y, rq.clamped)


# ----------------------------------------------------------------------------------------------------------------
# Public values
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True, eq=False)
class LoRAPublic:
    """What a verifier holds for one call: the output, and x_q or its digest, and the adapter's digest if hashed.

    Which fields are present is fixed by the statement's bindings (`check_public`): x_q when x is public or
    polycommit (the verifier knows x), x_digest when hashed; adapter_digest when the adapter is hashed; y_q always.
    Commitments that are not instances (a fixed adapter's verifying key, KZG commitments) are the backend's.
    """

    y_q: np.ndarray
    x_q: np.ndarray | None = None
    x_digest: int | None = None
    adapter_digest: int | None = None

    def to_json(self) -> dict:
        return {"y_q": self.y_q.tolist(), "x_q": None if self.x_q is None else self.x_q.tolist(),
                "x_digest": None if self.x_digest is None else f"0x{self.x_digest:064x}",
                "adapter_digest": None if self.adapter_digest is None else f"0x{self.adapter_digest:064x}"}

    @classmethod
    def from_json(cls, statement: LoRAStatement, data: object) -> "LoRAPublic":
        """Decode `to_json` output and check it against `statement` (shapes, ranges, presence)."""
        if not isinstance(data, dict) or set(data) != {"y_q", "x_q", "x_digest", "adapter_digest"}:
            raise ValueError("public values must be an object with keys y_q, x_q, x_digest, adapter_digest")
        y_lo, y_hi = statement.y_bounds
        public = cls(
            y_q=as_int_matrix("y_q", data["y_q"], IntRange(max(y_lo.bit_length(), y_hi.bit_length()) + 1)),
            x_q=None if data["x_q"] is None else as_int_matrix("x_q", data["x_q"], statement.activation_range),
            x_digest=_parse_digest("x_digest", data["x_digest"]),
            adapter_digest=_parse_digest("adapter_digest", data["adapter_digest"]))
        check_public(statement, public)
        return public

    def equals(self, other: "LoRAPublic") -> bool:
        """Same values in every field (arrays compared by shape and content)."""
        def same(a, b) -> bool:
            if a is None or b is None:
                return a is None and b is None
            return a.shape == b.shape and bool(np.array_equal(a, b))
        return (same(self.y_q, other.y_q) and same(self.x_q, other.x_q) and self.x_digest == other.x_digest
                and self.adapter_digest == other.adapter_digest)


def _parse_digest(name: str, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        raise ValueError(f"{name} must be a 0x-prefixed 64-digit hex field element")
    try:
        v = int(value, 16)
    except ValueError:
        raise ValueError(f"{name} is not hexadecimal") from None
    if v >= P:
        raise ValueError(f"{name} is not below the field modulus")
    return v


def check_public(statement: LoRAStatement, public: LoRAPublic) -> None:
    """ValueError unless `public` has exactly the fields the statement's bindings call for, in shape and range.

    The integer ranges are checked here because a backend may leave them to the verifier (EZKL does not
    range-check public inputs and outputs when told not to): y_q within `y_bounds`, x_q int8.
    """
    s = statement.shape
    y = public.y_q
    if not isinstance(y, np.ndarray) or y.shape != s.y_shape:
        raise ValueError(f"y_q must have shape {s.y_shape}, got {getattr(y, 'shape', type(y).__name__)}")
    lo, hi = statement.y_bounds
    if y.size and (int(y.min()) < lo or int(y.max()) > hi):
        raise ValueError(f"y_q lies outside [{lo}, {hi}], the range B_q·z_q can take")
    x_known = statement.x_binding in (ActivationBinding.PUBLIC, ActivationBinding.POLYCOMMIT)
    if x_known:
        if public.x_q is None or public.x_q.shape != s.x_shape:
            raise ValueError(f"x is {statement.x_binding.value}: x_q of shape {s.x_shape} is required")
        if not statement.activation_range.contains(public.x_q):
            raise ValueError(f"x_q must lie in {statement.activation_range}")
    elif public.x_q is not None:
        raise ValueError(f"x is {statement.x_binding.value}: x_q must not be part of the public values")
    if (statement.x_binding in HASHED_ACTIVATIONS) != (public.x_digest is not None):
        raise ValueError(f"x is {statement.x_binding.value}: x_digest must be "
                         f"{'present' if statement.x_binding in HASHED_ACTIVATIONS else 'absent'}")
    if (statement.adapter_binding in HASHED_ADAPTERS) != (public.adapter_digest is not None):
        raise ValueError(f"the adapter is {statement.adapter_binding.value}: adapter_digest must be "
                         f"{'present' if statement.adapter_binding in HASHED_ADAPTERS else 'absent'}")
    for name in ("x_digest", "adapter_digest"):
        v = getattr(public, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < P):
            raise ValueError(f"{name} must be a field element")


def public_values(statement: LoRAStatement, witness: LoRAWitness, trace: LoRATrace | None = None) -> LoRAPublic:
    """The statement's public values for this witness (digests by zkref.lora.commitments)."""
    trace = trace or evaluate(statement, witness)
    xb, ab = statement.x_binding, statement.adapter_binding
    return LoRAPublic(
        y_q=trace.y_q,
        x_q=witness.x_q if xb in (ActivationBinding.PUBLIC, ActivationBinding.POLYCOMMIT) else None,
        x_digest=activations_digest(witness.x_q, packed=xb is ActivationBinding.HASHED_PACKED,
                                    bits=statement.activation_bits)
        if xb in HASHED_ACTIVATIONS else None,
        adapter_digest=adapter_digest(witness.A_q, witness.B_q, shift=statement.shift,
                                      packed=ab is AdapterBinding.HASHED_PACKED, weight_bits=statement.weight_bits,
                                      z_bits=statement.z_bits)
        if ab in HASHED_ADAPTERS else None)


@dataclass(frozen=True)
class InstanceSegment:
    """A named run of the flat instance vector."""

    name: str
    offset: int
    length: int


def instance_layout(statement: LoRAStatement) -> tuple[InstanceSegment, ...]:
    """The flat public-instance vector, in order: the digests (x's, then the adapter's), then x_q and y_q row-major.

    Digests come first because EZKL places its Poseidon module's outputs before the graph's public inputs and outputs
    (measured: x public with a hashed adapter gives [adapter digest, x_q, y]). Values bound by a verifying key or a
    KZG commitment (a fixed or polycommit adapter, polycommit x or y) take no instance cells. Every backend and
    zkref's layout place instances in this order.
    """
    s = statement.shape
    parts: list[tuple[str, int]] = []
    if statement.x_binding in HASHED_ACTIVATIONS:
        parts.append(("x_digest", 1))
    if statement.adapter_binding in HASHED_ADAPTERS:
        parts.append(("adapter_digest", 1))
    if statement.x_binding is ActivationBinding.PUBLIC:
        parts.append(("x_q", s.tokens * s.d_in))
    if statement.y_binding is OutputBinding.PUBLIC:
        parts.append(("y_q", s.tokens * s.d_out))
    out, offset = [], 0
    for name, length in parts:
        out.append(InstanceSegment(name, offset, length))
        offset += length
    return tuple(out)


def instance_length(statement: LoRAStatement) -> int:
    return sum(seg.length for seg in instance_layout(statement))


def encode_instances(statement: LoRAStatement, public: LoRAPublic) -> list[int]:
    """`public` as the flat vector of field elements (negative v as p-|v|) in `instance_layout` order."""
    check_public(statement, public)
    values = {"x_q": public.x_q, "x_digest": public.x_digest, "adapter_digest": public.adapter_digest,
              "y_q": public.y_q}
    out: list[int] = []
    for seg in instance_layout(statement):
        v = values[seg.name]
        out.extend([int(e) % P for e in v.reshape(-1).tolist()] if isinstance(v, np.ndarray) else [int(v) % P])
    return out


def decode_instances(statement: LoRAStatement, instances: list[int], *, x_q: np.ndarray | None = None,
                     y_q: np.ndarray | None = None) -> LoRAPublic:
    """Inverse of `encode_instances`; the values a KZG commitment binds (polycommit x or y) are passed in.

    A vector of the wrong length, a non-field element, or x/y values outside their ranges is a ValueError.
    """
    expected = instance_length(statement)
    if not isinstance(instances, (list, tuple)) or len(instances) != expected:
        got = len(instances) if isinstance(instances, (list, tuple)) else type(instances).__name__
        raise ValueError(f"statement {statement.id} has {expected} public instances, got {got}")
    for i, v in enumerate(instances):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < P:
            raise ValueError(f"instance {i} is not a field element in [0, p)")
    fields: dict[str, object] = {"x_q": x_q, "y_q": y_q}
    s = statement.shape
    for seg in instance_layout(statement):
        chunk = instances[seg.offset:seg.offset + seg.length]
        if seg.name in ("x_q", "y_q"):
            fields[seg.name] = _signed_matrix(seg.name, chunk, s.x_shape if seg.name == "x_q" else s.y_shape)
        else:
            fields[seg.name] = chunk[0]
    if fields["y_q"] is None:
        raise ValueError("y is polycommit: pass the y_q the verifier received")
    if statement.x_binding is ActivationBinding.POLYCOMMIT and fields["x_q"] is None:
        raise ValueError("x is polycommit: pass the x_q the verifier sent")
    public = LoRAPublic(y_q=np.asarray(fields["y_q"]), x_q=None if fields["x_q"] is None else np.asarray(fields["x_q"]),
                        x_digest=fields.get("x_digest"), adapter_digest=fields.get("adapter_digest"))
    check_public(statement, public)
    return public


def _signed_matrix(name: str, felts: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    """Field elements read back as signed integers (v or v − p); ValueError for elements far from any int64."""
    values = [signed(v) for v in felts]
    if any(abs(v) >= 2**62 for v in values):
        raise ValueError(f"{name} holds a field element far outside any integer range it can take")
    return np.array(values, dtype=np.int64).reshape(shape)
