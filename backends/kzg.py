"""KZG commitments to EZKL "polycommit" columns, recomputed independently with py_ecc.

EZKL 23 can replace public inputs, outputs or parameters by a KZG commitment to the advice column(s) holding them
(visibility "polycommit"). A verifier who knows the values can compute that commitment itself and check that the proof
carries exactly it, without trusting the prover's software. This module is a readable reference for that commitment,
checked bit-for-bit against ``ezkl.kzg_commit``, the witness file and the proof transcript (tests/test_kzg.py).

What EZKL commits to (``PolyCommitChip::commit`` in ezkl ``src/circuit/modules/polycommit.rs``; halo2's prover does
the same to the unblinded advice columns, so the witness, ``kzg_commit`` and the proof agree):

* The circuit has 2^k rows. The last ``u = blinding_factors + 1`` rows of every column are unusable
  (EZKL circuits have 5 blinding factors, so u = 6). A column holds ``n = 2^k - u`` values.
* One tensor (an input, the output, or ALL parameters flattened into one tensor in graph order, row-major) of length
  L is cut into ``L // n + 1`` columns: value i goes to column ``i // n``, row ``i % n``. Rows the message does not
  reach are 0; the u unusable rows of every column are 1 (halo2's ``Blind::default()`` is ONE, and unblinded advice
  columns are padded with it instead of random values). Note ``L // n + 1``: a message filling whole columns exactly
  gets one more column that holds only the padding ones.
* Row j is the evaluation at ω^j, ω the 2^k-th root of unity ``7^((p-1)/2^28)^(2^(28-k))`` of halo2curves' BN254 Fr.
  The commitment to a column with evaluations e is ``Σ_j e_j · L_j(τ)·G``: an MSM over the SRS's Lagrange-basis
  points. No hiding blind is added (KZG ``commit_lagrange`` ignores it).

Signed integers become field elements as v mod p (negative v is p - |v|).

Where the commitments appear: ``ezkl.kzg_commit`` returns ``PyG1Affine`` objects (``.x``, ``.y``: little-endian hex);
the witness JSON holds ``processed_{inputs,params,outputs}.polycommit``, one list per tensor of 32-byte compressed
points in hex; the proof's transcript (``proof["proof"]``) starts with the same points, inputs then params then
outputs, 64 bytes each (x, y big-endian), ``proof["split"]`` marking the outputs. A verifier checks a proof against its
own commitments by comparing that prefix (``proof_commitments``) or by writing them in (``with_commitments``, or
``ezkl.swap_proof_commitments`` with ``witness_stub``) and running ``ezkl.verify``.

Two EZKL 23 quirks (tests/test_kzg.py): ``kzg_commit`` does not downsize an SRS larger than the circuit, so it then
commits over the wrong domain (use ``commit(..., k=logrows)``); and a tensor whose length is just short of a column
multiple gets an extra column in the circuit that the witness does not list (see ``circuit_columns``).
"""
from __future__ import annotations

import functools
import operator
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from zkref.primitives.field import P

_RECURSION_LIMIT = sys.getrecursionlimit()
from py_ecc import optimized_bn128 as bn  # noqa: E402

sys.setrecursionlimit(_RECURSION_LIMIT)
# py_ecc raises the interpreter's recursion limit to 100,000 on import; with it, parsing a deeply nested JSON document
# (a bundle's vk, an anchor file, a request body) overflows the C stack and kills the process instead of raising
# RecursionError. zkref's uses of py_ecc recurse at most ~256 deep (scalar multiplication), far below the default.

Q: int = bn.field_modulus
"""BN254 base field modulus: the coordinates of G1 points live in [0, Q)."""

TWO_ADICITY: int = 28
"""P - 1 = 2^28 · t with t odd: the largest power-of-two evaluation domain halo2 supports is 2^28."""

ROOT_OF_UNITY: int = pow(7, (P - 1) >> TWO_ADICITY, P)
"""halo2curves' primitive 2^28-th root of unity (GENERATOR 7 raised to t); domain roots are its squares."""

EZKL_BLINDING_FACTORS: int = 5
"""halo2's ``blinding_factors()`` for EZKL circuits: max(3, max advice queries per column) + 2 = 5."""

EZKL_UNUSABLE_ROWS: int = EZKL_BLINDING_FACTORS + 1
"""Rows at the end of every column that hold padding (ones) instead of values: blinding factors + 1."""

MAX_SRS_K: int = 20
"""Largest SRS read by default: a 2^20 SRS is 128 MiB on disk and ~2M Python points in memory."""

_R_INV: int = pow(2**256, -1, Q)
"""Inverse of the Montgomery radix: halo2curves writes raw field elements as little-endian Montgomery limbs a·2^256."""

_FQ_BYTES = 32
_G1_RAW_BYTES = 2 * _FQ_BYTES
_G2_RAW_BYTES = 4 * _FQ_BYTES


# ----------------------------------------------------------------------------------------------------------------------
# Points
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class G1Point:
    """An affine BN254 G1 point with integer coordinates; (0, 0) is the identity, as in halo2curves."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not (0 <= self.x < Q and 0 <= self.y < Q):
            raise ValueError(f"G1 coordinates must lie in [0, Q): ({self.x}, {self.y})")
        if not self.is_identity and (self.y * self.y - self.x**3 - 3) % Q:
            raise ValueError(f"({self.x}, {self.y}) is not on BN254 G1 (y^2 = x^3 + 3)")

    @property
    def is_identity(self) -> bool:
        return self.x == 0 and self.y == 0

    @classmethod
    def identity(cls) -> G1Point:
        return cls(0, 0)

    @classmethod
    def generator(cls) -> G1Point:
        return cls(1, 2)

    def to_py_ecc(self) -> tuple:
        """py_ecc optimized_bn128's projective form (x, y, z); z = 0 is the identity."""
        if self.is_identity:
            return bn.Z1
        return (bn.FQ(self.x), bn.FQ(self.y), bn.FQ.one())

    @classmethod
    def from_py_ecc(cls, pt: tuple) -> G1Point:
        """Normalise a py_ecc projective point to affine integers."""
        if bn.is_inf(pt):
            return cls.identity()
        x, y = bn.normalize(pt)
        return cls(int(x), int(y))


@dataclass(frozen=True)
class G2Point:
    """An affine BN254 G2 point; each coordinate is an Fq2 element (c0, c1) meaning c0 + c1·u, u^2 = -1."""

    x: tuple[int, int]
    y: tuple[int, int]

    def __post_init__(self) -> None:
        pt = (bn.FQ2(list(self.x)), bn.FQ2(list(self.y)), bn.FQ2.one())
        if not bn.is_on_curve(pt, bn.b2):
            raise ValueError("point is not on the BN254 G2 twist (subgroup membership is not checked)")

    def to_py_ecc(self) -> tuple:
        return (bn.FQ2(list(self.x)), bn.FQ2(list(self.y)), bn.FQ2.one())


# ----------------------------------------------------------------------------------------------------------------------
# The SRS file ezkl.gen_srs writes (halo2 ParamsKZG::write, SerdeFormat::RawBytes)
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Srs:
    """KZG parameters: τ^i·G (``g``), L_i(τ)·G over the 2^k domain (``g_lagrange``), G2 and τ·G2.

    Compared and hashed by identity (eq=False) so per-SRS caches stay cheap.
    """

    k: int
    g: tuple[G1Point, ...]
    g_lagrange: tuple[G1Point, ...]
    g2: G2Point
    s_g2: G2Point

    @property
    def n(self) -> int:
        return 1 << self.k


def srs_file_size(k: int) -> int:
    """Exact byte length of a RawBytes SRS for 2^k rows: u32 k, 2·2^k G1 points of 64 B, two G2 points of 128 B."""
    return 4 + 2 * (1 << k) * _G1_RAW_BYTES + 2 * _G2_RAW_BYTES


def _raw_fq(buf: bytes | memoryview, offset: int) -> int:
    """One base-field element as halo2curves writes it raw: 32 little-endian bytes of the Montgomery form a·2^256."""
    mont = int.from_bytes(buf[offset:offset + _FQ_BYTES], "little")
    if mont >= Q:
        raise ValueError(f"raw field element at byte {offset} is not below Q")
    return mont * _R_INV % Q


def _raw_g1(buf: bytes | memoryview, offset: int) -> G1Point:
    return G1Point(_raw_fq(buf, offset), _raw_fq(buf, offset + _FQ_BYTES))


def _raw_g2(buf: bytes | memoryview, offset: int) -> G2Point:
    c = [_raw_fq(buf, offset + i * _FQ_BYTES) for i in range(4)]
    return G2Point((c[0], c[1]), (c[2], c[3]))


def read_srs(path: str | os.PathLike, *, max_k: int = MAX_SRS_K) -> Srs:
    """Read an SRS written by ``ezkl.gen_srs`` (halo2 ``ParamsKZG`` RawBytes format), checking every point.

    Layout: k as u32 little-endian; 2^k points g; 2^k points g_lagrange; g2; s_g2. A G1 point is x then y, a G2 point
    x.c0, x.c1, y.c0, y.c1; every coordinate is 32 bytes, little-endian, in Montgomery form. The file length is
    checked against k before anything is allocated.
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(4)
        if len(header) != 4:
            raise ValueError(f"{path}: too short for an SRS header")
        k = int.from_bytes(header, "little")
        if not 0 <= k <= min(max_k, TWO_ADICITY):
            raise ValueError(f"{path}: k = {k} is outside 0..{min(max_k, TWO_ADICITY)}")
        if size != srs_file_size(k):
            raise ValueError(f"{path}: {size} bytes, but a RawBytes SRS with k = {k} has {srs_file_size(k)}")
        body = memoryview(f.read(size - 4))
    n = 1 << k
    g = tuple(_raw_g1(body, i * _G1_RAW_BYTES) for i in range(n))
    base = n * _G1_RAW_BYTES
    g_lagrange = tuple(_raw_g1(body, base + i * _G1_RAW_BYTES) for i in range(n))
    base += n * _G1_RAW_BYTES
    g2 = _raw_g2(body, base)
    s_g2 = _raw_g2(body, base + _G2_RAW_BYTES)
    if g[0] != G1Point.generator():
        raise ValueError(f"{path}: g[0] is not the G1 generator")
    return Srs(k=k, g=g, g_lagrange=g_lagrange, g2=g2, s_g2=s_g2)


def srs_to_bytes(srs: Srs) -> bytes:
    """The RawBytes file ``read_srs`` reads (inverse of it): for tests and for writing a derived SRS."""
    def fq(v: int) -> bytes:
        return (v * 2**256 % Q).to_bytes(_FQ_BYTES, "little")

    parts = [srs.k.to_bytes(4, "little")]
    parts += [fq(p.x) + fq(p.y) for p in srs.g + srs.g_lagrange]
    parts += [fq(c) for pt in (srs.g2, srs.s_g2) for c in (*pt.x, *pt.y)]
    return b"".join(parts)


def check_srs(srs: Srs, *, seed: int | None = None) -> None:
    """Raise ValueError unless the SRS is internally consistent: one τ behind g, g_lagrange and s_g2.

    Random linear combinations (128-bit coefficients) make each check one MSM pair instead of 2^k checks:
    e(Σ r_i·τ^(i+1)G, G2) = e(Σ r_i·τ^iG, τG2) shows g holds successive powers of the τ in s_g2, and
    Σ r_j·L_j(τ)G = Σ c_i·τ^iG with c = interpolate(r) shows g_lagrange is their Lagrange basis in halo2's row order.
    It cannot show τ is unknown: ``ezkl.gen_srs`` output is for tests only. ~2-3 s at k = 8 (two pairings ~1 s).
    """
    import random

    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    if srs.g2.to_py_ecc()[:2] != bn.G2[:2]:
        raise ValueError("g2 is not the BN254 G2 generator")
    r = [rng.getrandbits(128) for _ in range(srs.n - 1)]
    lhs = msm(r, srs.g[1:]).to_py_ecc()
    rhs = msm(r, srs.g[:-1]).to_py_ecc()
    if srs.n > 1 and bn.pairing(srs.g2.to_py_ecc(), lhs) != bn.pairing(srs.s_g2.to_py_ecc(), rhs):
        raise ValueError("g is not a sequence of powers of the τ in s_g2")
    r = [rng.getrandbits(128) for _ in range(srs.n)]
    if msm(r, srs.g_lagrange) != msm(interpolate(r), srs.g):
        raise ValueError("g_lagrange is not the Lagrange basis of g over halo2's domain")


# ----------------------------------------------------------------------------------------------------------------------
# The evaluation domain and FFTs
# ----------------------------------------------------------------------------------------------------------------------

def domain_root(k: int) -> int:
    """ω with ω^(2^k) = 1 primitive: row j of a 2^k-row column is the evaluation at ω^j (halo2's EvaluationDomain)."""
    if not 0 <= k <= TWO_ADICITY:
        raise ValueError(f"k = {k} is outside 0..{TWO_ADICITY}")
    return pow(ROOT_OF_UNITY, 1 << (TWO_ADICITY - k), P)


def _bit_reversed(items: list) -> list:
    n = len(items)
    bits = n.bit_length() - 1
    return [items[int(format(i, f"0{bits}b")[::-1], 2) if bits else 0] for i in range(n)]


def _fft(values: list, root: int, add, sub, scale) -> list:
    """Iterative radix-2 Cooley-Tukey: out_j = Σ_i values_i · root^(ij). Works on scalars or on group elements."""
    a = _bit_reversed(values)
    n = len(a)
    size = 2
    while size <= n:
        w_step = pow(root, n // size, P)
        half = size // 2
        twiddles = [pow(w_step, j, P) for j in range(half)]
        for start in range(0, n, size):
            for j in range(half):
                u, v = a[start + j], scale(a[start + j + half], twiddles[j])
                a[start + j], a[start + j + half] = add(u, v), sub(u, v)
        size *= 2
    return a


def interpolate(evaluations: Sequence[int]) -> list[int]:
    """Coefficients of the polynomial taking evaluations[j] at ω^j (inverse FFT over the 2^k domain)."""
    n = len(evaluations)
    if n & (n - 1) or n == 0:
        raise ValueError(f"need a power-of-two number of evaluations, got {n}")
    k = n.bit_length() - 1
    out = _fft([operator.index(e) % P for e in evaluations], pow(domain_root(k), -1, P),
               add=lambda a, b: (a + b) % P, sub=lambda a, b: (a - b) % P, scale=lambda a, w: a * w % P)
    n_inv = pow(n, -1, P)
    return [c * n_inv % P for c in out]


@functools.lru_cache(maxsize=8)
def lagrange_basis(srs: Srs, k: int) -> tuple[G1Point, ...]:
    """L_j(τ)·G for the 2^k domain: the file's points if k = srs.k, else derived from τ^i·G (cached).

    The derivation is halo2's ``g_to_lagrange``, an inverse FFT in the group: L_j(τ)·G = (1/n) Σ_i ω^(-ij) τ^i·G.
    It costs (n/2)·k + n scalar multiplications (~16 ms each): fine for k <= 6, slow beyond.
    """
    if k == srs.k:
        return srs.g_lagrange
    if not 0 <= k < srs.k:
        raise ValueError(f"k = {k} needs an SRS with at least 2^{k} points; this one has k = {srs.k}")
    n = 1 << k
    pts = [p.to_py_ecc() for p in srs.g[:n]]
    out = _fft(pts, pow(domain_root(k), -1, P), add=bn.add, sub=lambda a, b: bn.add(a, bn.neg(b)),
               scale=bn.multiply)
    n_inv = pow(n, -1, P)
    return tuple(G1Point.from_py_ecc(bn.multiply(p, n_inv)) for p in out)


# ----------------------------------------------------------------------------------------------------------------------
# Multi-scalar multiplication
# ----------------------------------------------------------------------------------------------------------------------

def _window_bits(n: int) -> int:
    """Pippenger window width: ~log2(n) - 2 balances n bucket additions against 2^c bucket sums per window."""
    return max(1, min(16, n.bit_length() - 2))


def msm(scalars: Sequence[int], points: Sequence[G1Point]) -> G1Point:
    """Σ scalars_i · points_i by Pippenger's bucket method on signed scalars.

    Each scalar s is taken as its signed representative (s or s - p): a small negative value then costs as little as
    a small positive one (its point is negated), instead of being a 254-bit scalar p - |v|.
    """
    if len(scalars) != len(points):
        raise ValueError(f"{len(scalars)} scalars for {len(points)} points")
    terms = []
    for s, pt in zip(scalars, points):
        s = operator.index(s) % P      # ints only: a float here would be a silent truncation
        if s == 0 or pt.is_identity:
            continue
        q = pt.to_py_ecc()
        if s > P // 2:
            s, q = P - s, bn.neg(q)
        terms.append((s, q))
    if not terms:
        return G1Point.identity()
    c = _window_bits(len(terms))
    mask = (1 << c) - 1
    max_bits = max(s.bit_length() for s, _ in terms)
    acc = bn.Z1
    for window in reversed(range(0, max_bits, c)):
        if window + c < max_bits:      # not the top window: shift what we have by c bits
            for _ in range(c):
                acc = bn.double(acc)
        buckets: list = [None] * (1 << c)
        for s, q in terms:
            digit = (s >> window) & mask
            if digit:
                buckets[digit] = q if buckets[digit] is None else bn.add(buckets[digit], q)
        # Σ_d d·bucket_d as a running sum from the top bucket down: 2·2^c additions.
        running, total = bn.Z1, bn.Z1
        for d in range(mask, 0, -1):
            if buckets[d] is not None:
                running = bn.add(running, buckets[d])
            total = bn.add(total, running)
        acc = bn.add(acc, total)
    return G1Point.from_py_ecc(acc)


# ----------------------------------------------------------------------------------------------------------------------
# EZKL's polycommit commitment
# ----------------------------------------------------------------------------------------------------------------------

def column_capacity(k: int, unusable_rows: int = EZKL_UNUSABLE_ROWS) -> int:
    """Values one polycommit column holds: n = 2^k - unusable_rows."""
    if not 0 < unusable_rows < (1 << k):
        raise ValueError(f"unusable_rows = {unusable_rows} must be in 1..2^k - 1")
    return (1 << k) - unusable_rows


def witness_columns(length: int, k: int, unusable_rows: int = EZKL_UNUSABLE_ROWS) -> int:
    """Columns ``kzg_commit`` and the witness commit a tensor of ``length`` values to: length // n + 1."""
    return length // column_capacity(k, unusable_rows) + 1


def circuit_columns(length: int, k: int, unusable_rows: int = EZKL_UNUSABLE_ROWS) -> int:
    """Columns the circuit allocates for the tensor, i.e. how many commitments the proof carries for it.

    EZKL's ``VarTensor::new_unblinded_advice`` reserves room for one duplicated cell per column, so it allocates
    ((length + length // n + 1) // n) + 1 columns. That exceeds ``witness_columns`` when length mod n is within
    length // n + 1 of n (e.g. length = n - 1): the proof then carries an extra all-padding column the witness and
    ``kzg_commit`` do not list, and ``swap_proof_commitments`` misaligns (measured in tests/test_kzg.py).
    """
    n = column_capacity(k, unusable_rows)
    first = length // n + 1
    return (length + first) // n + 1


def column_evaluations(values: Sequence[int], k: int, unusable_rows: int = EZKL_UNUSABLE_ROWS,
                       columns: int | None = None) -> list[list[int]]:
    """The advice columns EZKL fills with a polycommit tensor, as 2^k field elements each.

    Value i sits in column i // n at row i % n (n = 2^k - unusable_rows); unreached rows are 0 and the last
    ``unusable_rows`` rows of every column are 1. ``columns`` defaults to ``witness_columns`` (len // n + 1).
    """
    n = column_capacity(k, unusable_rows)
    needed = witness_columns(len(values), k, unusable_rows) if columns is None else columns
    if needed * n < len(values):
        raise ValueError(f"{len(values)} values do not fit {needed} columns of {n}")
    out = [[0] * n + [1] * unusable_rows for _ in range(needed)]
    for i, v in enumerate(values):
        out[i // n][i % n] = operator.index(v) % P
    return out


def commit(values: Sequence[int], srs: Srs, k: int | None = None, *, unusable_rows: int = EZKL_UNUSABLE_ROWS,
           columns: int | None = None) -> tuple[G1Point, ...]:
    """EZKL's polycommit commitment to one tensor (flattened row-major): one G1 point per column.

    ``k`` is the circuit's logrows (default: the SRS's). With k = srs.k this is an MSM over the file's Lagrange
    points, touching only the rows that are not zero. With k < srs.k it is what EZKL's prover and ``gen_witness`` do
    after downsizing the SRS, computed through the monomial points instead (``commit_monomial``).
    ``columns`` defaults to what the witness lists; pass ``circuit_columns(...)`` for what the proof carries.
    """
    k = srs.k if k is None else k
    if k != srs.k:
        return commit_monomial(values, srs, k, unusable_rows=unusable_rows, columns=columns)
    basis = lagrange_basis(srs, k)
    return tuple(_commit_evaluations(col, basis) for col in column_evaluations(values, k, unusable_rows, columns))


def _commit_evaluations(evaluations: Sequence[int], basis: Sequence[G1Point]) -> G1Point:
    rows = [j for j, e in enumerate(evaluations) if e]
    return msm([evaluations[j] for j in rows], [basis[j] for j in rows])


def commit_monomial(values: Sequence[int], srs: Srs, k: int | None = None, *,
                    unusable_rows: int = EZKL_UNUSABLE_ROWS, columns: int | None = None) -> tuple[G1Point, ...]:
    """The same commitment through the monomial points: interpolate each column, then Σ c_i · τ^i·G.

    An independent route (it does not use the file's Lagrange points, so it checks them and the domain's ω), and
    the one that works with a larger SRS. Costs a full-size MSM over 2^k points: ~1 s at k = 8.
    """
    k = srs.k if k is None else k
    if not 0 <= k <= srs.k:
        raise ValueError(f"k = {k} needs an SRS with at least 2^{k} points; this one has k = {srs.k}")
    points = srs.g[:1 << k]
    return tuple(msm(interpolate(col), points) for col in column_evaluations(values, k, unusable_rows, columns))


# ----------------------------------------------------------------------------------------------------------------------
# Encodings EZKL uses for G1 points
# ----------------------------------------------------------------------------------------------------------------------

_SIGN_FLAG = 0x80
_IDENTITY_FLAG = 0x40


def to_compressed(pt: G1Point) -> bytes:
    """halo2curves' 32-byte compressed G1: x little-endian; top bit of the last byte = y is odd, next bit = identity.

    This is how the witness JSON stores commitments (``processed_*.polycommit``), as hex of these bytes.
    """
    if pt.is_identity:
        return bytes(31) + bytes([_IDENTITY_FLAG])
    out = bytearray(pt.x.to_bytes(_FQ_BYTES, "little"))
    if pt.y & 1:
        out[-1] |= _SIGN_FLAG
    return bytes(out)


def from_compressed(data: bytes) -> G1Point:
    """Inverse of ``to_compressed``; rejects bad flags, x >= Q and x with no point on the curve."""
    if len(data) != _FQ_BYTES:
        raise ValueError(f"compressed G1 point must be {_FQ_BYTES} bytes, got {len(data)}")
    flags = data[-1] & (_SIGN_FLAG | _IDENTITY_FLAG)
    x = int.from_bytes(data[:-1] + bytes([data[-1] & 0x3F]), "little")
    if flags & _IDENTITY_FLAG:
        if x or flags & _SIGN_FLAG:
            raise ValueError("identity flag set on a non-zero encoding")
        return G1Point.identity()
    if x == 0 or x >= Q:
        raise ValueError("compressed x is zero without the identity flag, or not below Q")
    rhs = (pow(x, 3, Q) + 3) % Q
    y = pow(rhs, (Q + 1) // 4, Q)          # Q ≡ 3 (mod 4): the square root, if there is one
    if y * y % Q != rhs:
        raise ValueError(f"no G1 point has x = {x}")
    if (y & 1) != bool(flags & _SIGN_FLAG):
        y = Q - y
    return G1Point(x, y)


def to_witness_hex(pt: G1Point) -> str:
    """The string a witness JSON holds for one commitment (64 hex chars, no 0x)."""
    return to_compressed(pt).hex()


def from_witness_hex(s: str) -> G1Point:
    if not isinstance(s, str) or len(s) != 2 * _FQ_BYTES:
        raise ValueError(f"witness commitment must be {2 * _FQ_BYTES} hex chars, got {s!r:.80}")
    return from_compressed(bytes.fromhex(s))


def to_transcript_bytes(pt: G1Point) -> bytes:
    """How EZKL's EVM transcript writes a point into the proof: x then y, each 32 bytes big-endian (64 bytes)."""
    return pt.x.to_bytes(_FQ_BYTES, "big") + pt.y.to_bytes(_FQ_BYTES, "big")


def from_transcript_bytes(data: bytes) -> G1Point:
    if len(data) != _G1_RAW_BYTES:
        raise ValueError(f"transcript point must be {_G1_RAW_BYTES} bytes, got {len(data)}")
    return G1Point(int.from_bytes(data[:_FQ_BYTES], "big"), int.from_bytes(data[_FQ_BYTES:], "big"))


def _coordinate_from_felt_hex(s: str) -> int:
    if not isinstance(s, str) or len(s) != 2 * _FQ_BYTES:
        raise ValueError(f"coordinate must be {2 * _FQ_BYTES} hex chars, got {s!r:.80}")
    v = int.from_bytes(bytes.fromhex(s), "little")
    if v >= Q:
        raise ValueError("coordinate is not below Q")
    return v


def from_ezkl_point(obj: object) -> G1Point:
    """A ``PyG1Affine`` as ``ezkl.kzg_commit`` returns it: .x and .y are 64-hex-char little-endian coordinates."""
    return G1Point(_coordinate_from_felt_hex(getattr(obj, "x")), _coordinate_from_felt_hex(getattr(obj, "y")))


def to_ezkl_coordinates(pt: G1Point) -> tuple[str, str]:
    """(x, y) as the little-endian hex strings ``PyG1Affine`` carries."""
    return pt.x.to_bytes(_FQ_BYTES, "little").hex(), pt.y.to_bytes(_FQ_BYTES, "little").hex()


# ----------------------------------------------------------------------------------------------------------------------
# Where commitments sit in EZKL's witness and proof files
# ----------------------------------------------------------------------------------------------------------------------

WITNESS_SECTIONS = ("processed_inputs", "processed_params", "processed_outputs")
"""The witness keys holding polycommit commitments, in the order the proof transcript carries them."""


def witness_commitments(witness: Mapping) -> dict[str, list[list[G1Point]]]:
    """The commitments in a witness JSON: per section, one list per committed tensor, one point per column."""
    out: dict[str, list[list[G1Point]]] = {}
    for section in WITNESS_SECTIONS:
        processed = witness.get(section) or {}
        tensors = processed.get("polycommit") or []
        out[section] = [[from_witness_hex(s) for s in tensor] for tensor in tensors]
    return out


def ordered_commitments(inputs: Iterable[Sequence[G1Point]] = (), params: Iterable[Sequence[G1Point]] = (),
                        outputs: Iterable[Sequence[G1Point]] = ()) -> list[G1Point]:
    """All commitments in transcript order: every input tensor's columns, then the parameters', then the outputs'."""
    return [pt for group in (inputs, params, outputs) for tensor in group for pt in tensor]


def _proof_bytes(proof: Mapping) -> bytes:
    raw = proof["proof"]
    if isinstance(raw, str):
        return bytes.fromhex(raw.removeprefix("0x"))
    return bytes(raw)  # a JSON list of ints 0..255; bytes() rejects anything else


def proof_commitments(proof: Mapping, count: int) -> list[G1Point]:
    """The first ``count`` points of a proof's transcript: EZKL writes the polycommit columns first."""
    data = _proof_bytes(proof)
    if not 0 <= count <= len(data) // _G1_RAW_BYTES:
        raise ValueError(f"a {len(data)}-byte proof cannot start with {count} points")
    return [from_transcript_bytes(data[i * _G1_RAW_BYTES:(i + 1) * _G1_RAW_BYTES]) for i in range(count)]


def with_commitments(proof: Mapping, commitments: Sequence[G1Point]) -> dict:
    """A copy of the proof JSON whose leading polycommit points are replaced (what ``ezkl.swap_proof_commitments``
    does from a witness file). Verifying the result checks the proof against commitments the verifier computed."""
    data = bytearray(_proof_bytes(proof))
    prefix = b"".join(to_transcript_bytes(pt) for pt in commitments)
    if len(prefix) > len(data):
        raise ValueError("more commitments than the proof has room for")
    data[:len(prefix)] = prefix
    out = dict(proof)
    out["proof"] = list(data)
    out["hex_proof"] = "0x" + data.hex()
    return out


def witness_stub(inputs: Sequence[Sequence[G1Point]] = (), params: Sequence[Sequence[G1Point]] = (),
                 outputs: Sequence[Sequence[G1Point]] = ()) -> dict:
    """A minimal witness JSON carrying only commitments, for ``ezkl.swap_proof_commitments(proof, witness)``."""
    def section(tensors: Sequence[Sequence[G1Point]]) -> dict:
        return {"poseidon_hash": None, "polycommit": [[to_witness_hex(pt) for pt in t] for t in tensors] or None}

    return {"inputs": [], "outputs": [], "processed_inputs": section(inputs), "processed_params": section(params),
            "processed_outputs": section(outputs), "max_lookup_inputs": 0, "min_lookup_inputs": 0,
            "max_range_size": 0}
