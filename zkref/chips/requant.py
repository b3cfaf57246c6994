"""Requant: proves z_q = clamp(round_half_away(z / 2^shift), int{bits}) for a public shift, by bucket membership.

For a fixed shift, the integers z with requant(z) = v form one interval [lo(v), hi(v)] (a "bucket"); the 2^bits
buckets (256 for the default int8 z_q) partition [z_min, z_max], the range z can take. So z_q = requant(z)  ⇔  lo(z_q) ≤ z ≤ hi(z_q). The chip proves that:

    rem   = z − lo(z_q) ≥ 0        (the remainder above the bucket's floor; = z − 2^shift·z_q + 2^(shift−1) inside)
    slack = hi(z_q) − z ≥ 0
    (1, z_q, z − rem, z + slack) ∈ BucketTable = {(1, v, lo(v), hi(v))} ∪ {(0, 0, 0, 0)}   lookup "<name> bucket"
    rem, slack ∈ [0, 2^(n·b)) as n limbs of b bits, each limb in a 2^b-row table            lookups "<name> ... limb"

Integer reading: limbs make rem and slack small non-negative integers; the lookup gives lo = z − rem and
hi = z + slack for the row of v = z_q, so lo(v) ≤ z ≤ hi(v) as integers, and v is the unique bucket holding z.
Since the buckets are clipped to [z_min, z_max], the chip also proves z_min ≤ z ≤ z_max. The bucket table depends
on the shift: the shift is a circuit constant (public through the verifying key). The leading tag column keeps the
all-zero row (needed where the selector is off) from being a second, non-canonical row for z_q = 0.

Layout: one block of n rows per value, z and z_q on the block's first row, limb k of rem and of slack on row k.
n·b ≥ bits of the widest bucket; b = max(8, ceil(bits / 3)) keeps n ≤ 3, so the limb columns are opened at no more
than 3 rotations (halo2's blinding-row count stays at its minimum). The bucket table has 2^bits + 1 rows: 257 for int8,
4097 for int12 (no more than the MulTable), 65,537 for int16 (k ≥ 17: the price of this readable design).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from zkref.plonkish.constraint_system import CircuitError, ConstraintSystem, LookupTable
from zkref.plonkish.expression import Column, Selector
from zkref.primitives.field import signed
from zkref.primitives.quant import div_pow2_round_half_away, requantize
from zkref.primitives.ranges import Z_BITS_DEFAULT, IntRange, check_shift, check_z_bits
from zkref.plonkish.layout import AssignedCells, Layouter, Region

MAX_ROTATIONS = 3


def round_half_away_shift(z: np.ndarray | int, shift: int) -> np.ndarray:
    """round_half_away_from_zero(z / 2^shift) for integer z: zkref.quant's exact integer definition."""
    return div_pow2_round_half_away(np.asarray(z, dtype=np.int64), shift)


def requant_reference(z: np.ndarray | int, shift: int, bits: int = Z_BITS_DEFAULT) -> np.ndarray:
    """clamp(round_half_away(z / 2^shift), int{bits}): the plain-integer statement the chip proves."""
    return requantize(np.asarray(z, dtype=np.int64), shift, bits).z_q


def bucket_bounds(shift: int, bits: int = Z_BITS_DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """Unclipped bucket bounds lo(v), hi(v) for v in int{bits} (the unbounded ends lo(v_min), hi(v_max) are ∓2^62).

    With S = 2^shift and h = floor(S/2): lo(v) = S·v − h for v ≥ 1, hi(v) = lo(v+1) − 1 for v ≥ 0, and the
    negative buckets mirror the positive ones (rounding half away from zero is odd): lo(−v) = −hi(v), hi(−v) = −lo(v).
    """
    s = 1 << shift
    h = s >> 1
    q = IntRange(check_z_bits(bits))
    v = np.arange(q.lo, q.hi + 1, dtype=np.int64)
    m = np.abs(v)
    lo = np.where(v > 0, s * v - h, -(s * (m + 1) - h - 1))      # v = 0 gives -hi(0) too
    hi = np.where(v >= 0, s * (v + 1) - h - 1, -(s * m - h))
    big = np.int64(1 << 62)
    lo[0] = -big                                                  # v_min saturates downwards
    hi[-1] = big                                                  # v_max saturates upwards
    return lo, hi


@functools.lru_cache(maxsize=256)
def requant_buckets(shift: int, z_min: int, z_max: int, bits: int = Z_BITS_DEFAULT
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-empty buckets clipped to [z_min, z_max]: arrays (v, lo(v), hi(v)) in increasing v."""
    lo, hi = bucket_bounds(shift, bits)
    lo = np.maximum(lo, z_min)
    hi = np.minimum(hi, z_max)
    keep = lo <= hi
    q = IntRange(bits)
    v = np.arange(q.lo, q.hi + 1, dtype=np.int64)[keep]
    out = (v, lo[keep], hi[keep])
    for arr in out:
        arr.setflags(write=False)
    return out


def limb_layout(shift: int, z_min: int, z_max: int, limb_bits: int | None = None, bits: int = Z_BITS_DEFAULT
                ) -> tuple[int, int]:
    """(limb bits b, limbs n) so that n·b covers the widest bucket's remainder, with n ≤ 3 unless b is forced."""
    _, lo, hi = requant_buckets(shift, z_min, z_max, bits)
    bits = max(1, int((hi - lo).max()).bit_length())
    if limb_bits is None:
        limb_bits = max(8, -(-bits // MAX_ROTATIONS))
    if not 1 <= limb_bits <= 16:
        raise ValueError(f"limb_bits must be in 1..16, got {limb_bits}")
    return limb_bits, max(1, -(-bits // limb_bits))


@dataclass(frozen=True)
class RequantConfig:
    """Columns, selectors, tables and the constants (shift, z range, z_q's width, limb layout) of one Requant chip."""

    name: str
    z: Column
    zq: Column
    rem: Column
    slack: Column
    q_bucket: Selector
    q_limb: Selector
    bucket: LookupTable
    limb: LookupTable
    shift: int
    z_min: int
    z_max: int
    limb_bits: int
    limbs: int
    bits: int = Z_BITS_DEFAULT


class Requant:
    """z_q = clamp(round_half_away(z / 2^shift), int{bits}) for runs of z cells, one n-row block per value."""

    chip_name = "Requant"

    def __init__(self, config: RequantConfig):
        self.config = config

    @staticmethod
    def configure(cs: ConstraintSystem, *, shift: int, z_min: int, z_max: int, bits: int = Z_BITS_DEFAULT,
                  limb_bits: int | None = None, name: str = "requant") -> RequantConfig:
        """Declare the chip for a public `shift`, outputs of `bits` bits and inputs known to lie in [z_min, z_max]
        (proven, not assumed)."""
        shift = check_shift(shift)
        bits = check_z_bits(bits)
        if not z_min <= 0 <= z_max or max(-z_min, z_max) >= 1 << 60:
            raise ValueError(f"need z_min <= 0 <= z_max with |bounds| < 2^60, got [{z_min}, {z_max}]")
        shift, z_min, z_max = int(shift), int(z_min), int(z_max)
        limb_bits, n = limb_layout(shift, z_min, z_max, limb_bits, bits)
        z = cs.advice_column(f"{name}.z", equality=True)
        zq = cs.advice_column(f"{name}.zq", equality=True)
        rem = cs.advice_column(f"{name}.rem")
        slack = cs.advice_column(f"{name}.slack")
        q_bucket, q_limb = cs.selector(f"{name}.q_bucket"), cs.selector(f"{name}.q_limb")
        bucket = cs.lookup_table(f"{name}.bucket", ["tag", "v", "lo", "hi"])
        limb = cs.lookup_table(f"{name}.limb{limb_bits}", ["v"])
        q = q_bucket.expr()
        rem_sum = sum((rem.query(k) * (1 << (limb_bits * k)) for k in range(1, n)), rem.cur())
        slack_sum = sum((slack.query(k) * (1 << (limb_bits * k)) for k in range(1, n)), slack.cur())
        cs.lookup(f"{name} bucket: lo(z_q) <= z <= hi(z_q)",
                  [q, q * zq.cur(), q * (z.cur() - rem_sum), q * (z.cur() + slack_sum)], bucket)
        cs.lookup(f"{name} remainder limb", [q_limb.expr() * rem.cur()], limb)
        cs.lookup(f"{name} slack limb", [q_limb.expr() * slack.cur()], limb)
        return RequantConfig(name, z, zq, rem, slack, q_bucket, q_limb, bucket, limb, shift, z_min, z_max,
                             limb_bits, n, bits)

    def load(self, layouter: Layouter) -> None:
        """Fill the bucket table (all-zero row first, then (1, v, lo, hi)) and the limb range table."""
        cfg = self.config
        v, lo, hi = requant_buckets(cfg.shift, cfg.z_min, cfg.z_max, cfg.bits)
        zero = np.zeros(1, dtype=np.int64)
        tag = np.concatenate([zero, np.ones(len(v), dtype=np.int64)])
        layouter.assign_table(cfg.bucket, [tag, np.concatenate([zero, v]), np.concatenate([zero, lo]),
                                           np.concatenate([zero, hi])])
        layouter.assign_table(cfg.limb, [np.arange(1 << cfg.limb_bits, dtype=np.int64)])

    def witness(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(z_q, rem limbs (N, n), slack limbs (N, n)) for integer inputs z (N,).

        Inputs outside [z_min, z_max] get the clamped z_q and limbs of the (then impossible) remainders modulo
        2^(n·b): the bucket lookup then fails, naming the chip, instead of synthesis crashing.
        """
        cfg = self.config
        zq = requant_reference(z, cfg.shift, cfg.bits)
        lo_all, hi_all = bucket_bounds(cfg.shift, cfg.bits)
        q_min = IntRange(cfg.bits).lo
        lo = np.maximum(lo_all, cfg.z_min)[zq - q_min]
        hi = np.minimum(hi_all, cfg.z_max)[zq - q_min]
        mask = (1 << cfg.limb_bits) - 1
        shifts = np.arange(cfg.limbs, dtype=np.int64) * cfg.limb_bits
        rem = ((z - lo)[:, None] >> shifts[None, :]) & mask
        slack = ((hi - z)[:, None] >> shifts[None, :]) & mask
        return zq, rem, slack

    def assign(self, layouter: Layouter, z_cells: AssignedCells, name: str | None = None) -> AssignedCells:
        """Copy the z cells in, prove their requantisation, return the z_q cells (one per input, in order)."""
        cfg = self.config
        count, n = len(z_cells), cfg.limbs
        rows = count * n
        known = layouter.layout.with_values
        zq = rem = slack = None
        if known:
            if z_cells.values is None:
                raise CircuitError("requant inputs carry no values while proving with a witness")
            z = np.array([signed(v) for v in z_cells.values], dtype=object) if z_cells.values.dtype == object \
                else z_cells.values.astype(np.int64)
            z = np.clip(z, -(1 << 61), 1 << 61).astype(np.int64)
            zq, rem, slack = self.witness(z)

        def fn(region: Region) -> AssignedCells:
            starts = np.arange(0, rows, n, dtype=np.int64)
            region.copy_advice(z_cells, cfg.z, starts)
            out = region.assign_advice(cfg.zq, starts, zq, length=count)
            region.assign_advice(cfg.rem, 0, None if rem is None else rem.reshape(-1), length=rows)
            region.assign_advice(cfg.slack, 0, None if slack is None else slack.reshape(-1), length=rows)
            region.enable_selector(cfg.q_bucket, starts)
            region.enable_selector(cfg.q_limb, 0, count=rows)
            return out

        return layouter.assign_region(name or cfg.name, fn, chip=self.chip_name)
