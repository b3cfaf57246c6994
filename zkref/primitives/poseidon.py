"""Poseidon over BN254, exactly as ezkl 23 computes `poseidon_hash` and "hashed" visibility.

Width t=2 (rate 1, capacity word state[1]), R_F=8 full rounds (4 before, 4 after) and R_P=56 partial rounds, S-box x^5.
Every round: add the round's two constants, apply the S-box (both words in full rounds, word 0 in partial rounds),
multiply by the 2x2 Cauchy MDS matrix. Constants and MDS are generated here by the Poseidon paper's Grain LFSR procedure
(field=1, sbox=0, n=254, t=2, R_F=8, R_P=56), never pasted, so the code documents where they come from.

Sponge (ezkl's, see specs/poseidon.md): state = (0, 2^64); for each message element m: state[0] += m; permute.
The digest is state[0]. No padding and no length tag; ezkl returns no digest for an empty message, we raise ValueError.

Two implementations: `poseidon_permutation` / `poseidon_hash` are the readable reference; `poseidon_hash_fast` /
`poseidon_permutation_fast` do the same arithmetic with gmpy2 and lazily reduced rounds for bulk hashing
(the tests check them against each other and against ezkl).
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import gmpy2
import numpy as np

from zkref.primitives.field import P

WIDTH = 2
RATE = 1
FULL_ROUNDS = 8
PARTIAL_ROUNDS = 56
ALPHA = 5
FIELD_BITS = 254
CAPACITY_INIT = 1 << 64
"""ezkl's initial capacity word: 2^64 for every message length (measured; see specs/poseidon.md)."""

__all__ = [
    "P", "WIDTH", "RATE", "FULL_ROUNDS", "PARTIAL_ROUNDS", "ALPHA", "CAPACITY_INIT",
    "PoseidonParams", "poseidon_params", "grain_bits",
    "poseidon_permutation", "poseidon_hash", "hash_signed",
    "poseidon_permutation_fast", "poseidon_hash_fast", "sponge_absorb_fast",
]


# ----------------------------------------------------------------------------------------------------------------------
# Parameter generation: the Grain LFSR of the Poseidon paper (Appendix F / generate_parameters_grain.sage).
# ----------------------------------------------------------------------------------------------------------------------

def _grain_init_bits(field: int, sbox: int, n: int, t: int, r_f: int, r_p: int) -> list[int]:
    """The 80-bit initial LFSR state: field (2 bits), sbox (4), n (12), t (12), R_F (10), R_P (10), then 30 ones."""
    bits: list[int] = []
    for value, width in ((field, 2), (sbox, 4), (n, 12), (t, 12), (r_f, 10), (r_p, 10)):
        if not 0 <= value < (1 << width):
            raise ValueError(f"Grain parameter {value} does not fit in {width} bits")
        bits.extend((value >> (width - 1 - i)) & 1 for i in range(width))  # most significant bit first
    bits.extend([1] * 30)
    return bits


def grain_bits(field: int = 1, sbox: int = 0, n: int = FIELD_BITS, t: int = WIDTH, r_f: int = FULL_ROUNDS,
               r_p: int = PARTIAL_ROUNDS) -> Iterator[int]:
    """The Grain LFSR output bit stream used to derive Poseidon's constants.

    LFSR: b_{i+80} = b_{i+62} ^ b_{i+51} ^ b_{i+38} ^ b_{i+23} ^ b_{i+13} ^ b_i, started from the 80-bit parameter
    encoding; the first 160 bits are discarded. Output is self-shrinking: bits are drawn in pairs (a, b) and b is
    emitted only when a == 1.
    """
    state = _grain_init_bits(field, sbox, n, t, r_f, r_p)

    def step() -> int:
        new = state[62] ^ state[51] ^ state[38] ^ state[23] ^ state[13] ^ state[0]
        state.pop(0)
        state.append(new)
        return new

    for _ in range(160):
        step()
    while True:
        a = step()
        b = step()
        if a == 1:
            yield b


def _take_int(bits: Iterator[int], n: int) -> int:
    """Read n bits, most significant first, as an unsigned integer."""
    v = 0
    for _ in range(n):
        v = (v << 1) | next(bits)
    return v


@dataclass(frozen=True)
class PoseidonParams:
    """Everything an implementation (or an in-circuit chip) needs: per-round constants, MDS, round counts.

    round_constants[r] = (c0, c1) is added to (state[0], state[1]) at the start of round r (0..63). Rounds
    0..3 and 60..63 are full, 4..59 partial (`is_full_round`).
    """
    round_constants: tuple[tuple[int, int], ...]
    mds: tuple[tuple[int, int], tuple[int, int]]
    full_rounds: int = FULL_ROUNDS
    partial_rounds: int = PARTIAL_ROUNDS
    width: int = WIDTH
    rate: int = RATE
    alpha: int = ALPHA
    capacity_init: int = CAPACITY_INIT
    modulus: int = P

    @property
    def rounds(self) -> int:
        return self.full_rounds + self.partial_rounds

    def is_full_round(self, r: int) -> bool:
        half = self.full_rounds // 2
        return r < half or r >= half + self.partial_rounds


@functools.cache
def poseidon_params() -> PoseidonParams:
    """Generate (once) ezkl's round constants and MDS from Grain.

    Round constants: (R_F + R_P)·t field elements, each a 254-bit draw, redrawn while >= p (rejection sampling),
    consumed in round-major order. MDS: continuing the same stream, 2t draws taken WITHOUT rejection (reduced mod p),
    redrawn as a block if not pairwise distinct; xs = first t, ys = last t, M[i][j] = 1/(x_i + y_j). ezkl uses this
    first candidate (the test vectors confirm it); the paper's optional MDS security checks are not re-run here.
    """
    bits = grain_bits()
    n_constants = (FULL_ROUNDS + PARTIAL_ROUNDS) * WIDTH
    constants: list[int] = []
    while len(constants) < n_constants:
        c = _take_int(bits, FIELD_BITS)
        if c < P:
            constants.append(c)
    while True:
        draws = [_take_int(bits, FIELD_BITS) % P for _ in range(2 * WIDTH)]
        if len(set(draws)) == len(draws):
            break
    xs, ys = draws[:WIDTH], draws[WIDTH:]
    if any((x + y) % P == 0 for x in xs for y in ys):  # cannot happen for distinct draws in practice; be explicit
        raise ArithmeticError("Cauchy MDS candidate has x_i + y_j = 0")
    mds = tuple(tuple(pow(x + y, -1, P) for y in ys) for x in xs)
    rcs = tuple((constants[WIDTH * r], constants[WIDTH * r + 1]) for r in range(FULL_ROUNDS + PARTIAL_ROUNDS))
    return PoseidonParams(round_constants=rcs, mds=mds)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------------
# Reference implementation: one round at a time, every value reduced, as the paper describes it.
# ----------------------------------------------------------------------------------------------------------------------

def _check_felt(v: object, i: int) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"Poseidon input [{i}] must be an int field element, got {type(v).__name__}: {v!r}")
    v = int(v)
    if not 0 <= v < P:
        raise ValueError(f"Poseidon input [{i}] = {v} is outside [0, p); encode negatives as p-|v| "
                         "(hash_signed does this)")
    return v


def poseidon_permutation(state: tuple[int, int]) -> tuple[int, int]:
    """The Poseidon permutation on a width-2 state of canonical field elements (reference: one readable round each)."""
    if len(state) != WIDTH:
        raise ValueError(f"Poseidon state must have {WIDTH} words, got {len(state)}")
    s0, s1 = (_check_felt(v, i) for i, v in enumerate(state))
    params = poseidon_params()
    (m00, m01), (m10, m11) = params.mds
    for r, (c0, c1) in enumerate(params.round_constants):
        s0, s1 = (s0 + c0) % P, (s1 + c1) % P                     # add round constants
        s0 = pow(s0, ALPHA, P)                                   # S-box on word 0 (every round)
        if params.is_full_round(r):
            s1 = pow(s1, ALPHA, P)                               # ... and word 1 in full rounds
        s0, s1 = (m00 * s0 + m01 * s1) % P, (m10 * s0 + m11 * s1) % P  # MDS
    return s0, s1


def _checked_message(values: Sequence[int] | np.ndarray) -> list[int]:
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuO":
            raise ValueError(f"Poseidon input array must hold integers, got dtype {values.dtype}")
        values = values.reshape(-1).tolist()
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"Poseidon input must be a sequence of field elements, got {type(values).__name__}")
    msg = [_check_felt(v, i) for i, v in enumerate(values)]
    if not msg:
        raise ValueError("Poseidon over an empty message has no digest (ezkl.poseidon_hash([]) returns [])")
    return msg


def poseidon_hash(values: Sequence[int]) -> int:
    """ezkl's sponge digest of a non-empty message of field elements in [0, p) (reference implementation)."""
    msg = _checked_message(values)
    state = (0, CAPACITY_INIT)
    for m in msg:
        state = poseidon_permutation(((state[0] + m) % P, state[1]))
    return state[0]


def hash_signed(values: Iterable[int] | np.ndarray) -> int:
    """Hash signed integers as ezkl encodes them (v < 0 becomes p-|v|); |v| must be below p. Uses the fast sponge."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iuO":
            raise ValueError(f"hash_signed needs integers, got dtype {values.dtype}")
        values = values.reshape(-1).tolist()
    felts = []
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"hash_signed input [{i}] must be an int, got {type(v).__name__}: {v!r}")
        v = int(v)
        if not -P < v < P:
            raise ValueError(f"hash_signed input [{i}] = {v} has |v| >= p")
        felts.append(v % P)
    return poseidon_hash_fast(felts)


# ----------------------------------------------------------------------------------------------------------------------
# Fast twin: same permutation with gmpy2 integers, one loop per round kind (no branching), fewer reductions.
# ----------------------------------------------------------------------------------------------------------------------

@functools.cache
def _fast_tables() -> tuple:
    params = poseidon_params()
    p = gmpy2.mpz(P)
    (m00, m01), (m10, m11) = ((gmpy2.mpz(a), gmpy2.mpz(b)) for a, b in params.mds)
    rc = [(gmpy2.mpz(a), gmpy2.mpz(b)) for a, b in params.round_constants]
    half = FULL_ROUNDS // 2
    first = rc[:half]
    partial = rc[half:half + PARTIAL_ROUNDS]
    last = rc[half + PARTIAL_ROUNDS:]
    return p, m00, m01, m10, m11, first, partial, last


def _permute_mpz(s0, s1, tables):
    """Permutation on mpz words; returns UNREDUCED words (reduce mod p before use).

    Inputs may be unreduced too. Only values feeding powmod skip reduction (powmod reduces its base); word 1 is
    reduced in partial rounds because it is multiplied again without an S-box. ~8% faster than reducing everything.
    """
    p, m00, m01, m10, m11, first, partial, last = tables
    powmod = gmpy2.powmod
    for c0, c1 in first:
        x0 = powmod(s0 + c0, 5, p)
        x1 = powmod(s1 + c1, 5, p)
        s0 = m00 * x0 + m01 * x1
        s1 = m10 * x0 + m11 * x1
    s1 = s1 % p
    for c0, c1 in partial:
        x0 = powmod(s0 + c0, 5, p)
        x1 = s1 + c1
        s0 = m00 * x0 + m01 * x1
        s1 = (m10 * x0 + m11 * x1) % p
    for c0, c1 in last:
        x0 = powmod(s0 + c0, 5, p)
        x1 = powmod(s1 + c1, 5, p)
        s0 = m00 * x0 + m01 * x1
        s1 = m10 * x0 + m11 * x1
    return s0, s1


def poseidon_permutation_fast(state: tuple[int, int]) -> tuple[int, int]:
    """Same as `poseidon_permutation`, computed with gmpy2 (inputs validated, outputs plain ints)."""
    if len(state) != WIDTH:
        raise ValueError(f"Poseidon state must have {WIDTH} words, got {len(state)}")
    s0, s1 = (_check_felt(v, i) for i, v in enumerate(state))
    tables = _fast_tables()
    a, b = _permute_mpz(gmpy2.mpz(s0), gmpy2.mpz(s1), tables)
    return int(a % tables[0]), int(b % tables[0])


def sponge_absorb_fast(state: tuple[int, int], message: Iterable[int]) -> tuple[int, int]:
    """Continue ezkl's sponge from `state` over already-validated field elements (bulk hashing; no checks).

    Lets callers stream a long message in chunks: start from (0, CAPACITY_INIT); state[0] of the result is the digest.
    """
    tables = _fast_tables()
    p = tables[0]
    s0, s1 = gmpy2.mpz(state[0]), gmpy2.mpz(state[1])
    for m in message:
        s0, s1 = _permute_mpz(s0 + m, s1, tables)  # absorb; the first round's powmod reduces s0 + m
    return int(s0 % p), int(s1 % p)


def poseidon_hash_fast(values: Sequence[int]) -> int:
    """`poseidon_hash` computed with the fast permutation (same validation, same digest)."""
    msg = _checked_message(values)
    return sponge_absorb_fast((0, CAPACITY_INIT), msg)[0]
