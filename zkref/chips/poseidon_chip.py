"""In-circuit Poseidon (EZKL's width-2, rate-1 sponge): one row per round, absorbed cells copied in, digest exposed.

Layout of a sponge over N elements (64 rows per absorbed element, plus one):
    row 0            state = (0, 2^64)                         gate "poseidon init"
    row 64·j         absorb m_j: first full round uses s0 + m_j  gate "poseidon absorb round"
    row 64·j + r     round r of permutation j (full or partial)  gates "poseidon full round" / "poseidon partial round"
    row 64·N         state after the last permutation; s0 is the digest
Each round gate maps the state on its row to the state on the next row: next = MDS · S-box(state + round constants),
the S-box x^5 on both words in full rounds and on word 0 only in partial rounds. Gates have degree 6 (selector · x^5).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zkref.plonkish.constraint_system import CircuitError, ConstraintSystem
from zkref.plonkish.expression import Column, Expression, Selector
from zkref.primitives.field import P
from zkref.plonkish.layout import AssignedCells, Layouter, Region
from zkref.primitives.poseidon import poseidon_params

CAPACITY_INIT = 1 << 64


@dataclass(frozen=True)
class PoseidonConfig:
    s0: Column
    s1: Column
    message: Column
    rc0: Column
    rc1: Column
    q_init: Selector
    q_absorb: Selector
    q_full: Selector
    q_partial: Selector


class PoseidonChip:
    """Configures the Poseidon gates once; `hash_cells` lays out a sponge over cells already in the circuit."""

    def __init__(self, config: PoseidonConfig):
        self.config = config
        self.params = poseidon_params()

    @property
    def rows_per_permutation(self) -> int:
        return self.params.full_rounds + self.params.partial_rounds

    def rows_for(self, n_elements: int) -> int:
        """Rows a sponge over n elements occupies: one permutation per element, plus the final state row."""
        return self.rows_per_permutation * max(n_elements, 0) + 1

    @staticmethod
    def configure(cs: ConstraintSystem, prefix: str = "poseidon") -> PoseidonConfig:
        params = poseidon_params()
        (m00, m01), (m10, m11) = params.mds
        s0 = cs.advice_column(f"{prefix}.s0", equality=True)
        s1 = cs.advice_column(f"{prefix}.s1")
        msg = cs.advice_column(f"{prefix}.m", equality=True)
        rc0, rc1 = cs.fixed_column(f"{prefix}.rc0"), cs.fixed_column(f"{prefix}.rc1")
        q_init, q_absorb = cs.selector(f"{prefix}.q_init"), cs.selector(f"{prefix}.q_absorb")
        q_full, q_partial = cs.selector(f"{prefix}.q_full"), cs.selector(f"{prefix}.q_partial")

        def pow5(e: Expression) -> Expression:
            sq = e * e
            return sq * sq * e

        def rounds(q: Selector, a: Expression, b: Expression, word1_sbox: bool) -> list[tuple[str, Expression]]:
            x0 = pow5(a)
            x1 = pow5(b) if word1_sbox else b
            return [("s0[next] = M00·x0 + M01·x1", q.expr() * (s0.next() - (m00 * x0 + m01 * x1))),
                    ("s1[next] = M10·x0 + M11·x1", q.expr() * (s1.next() - (m10 * x0 + m11 * x1)))]

        cs.create_gate(f"{prefix} init", [("s0 = 0", q_init.expr() * s0.cur()),
                                          ("s1 = 2^64", q_init.expr() * (s1.cur() - CAPACITY_INIT))])
        cs.create_gate(f"{prefix} absorb round",
                       rounds(q_absorb, s0.cur() + msg.cur() + rc0.cur(), s1.cur() + rc1.cur(), True))
        cs.create_gate(f"{prefix} full round", rounds(q_full, s0.cur() + rc0.cur(), s1.cur() + rc1.cur(), True))
        cs.create_gate(f"{prefix} partial round",
                       rounds(q_partial, s0.cur() + rc0.cur(), s1.cur() + rc1.cur(), False))
        return PoseidonConfig(s0, s1, msg, rc0, rc1, q_init, q_absorb, q_full, q_partial)

    def witness(self, messages: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The state (s0, s1) on every row of the sponge, as canonical ints (object arrays)."""
        per = self.rows_per_permutation
        s0 = np.empty(self.rows_for(len(messages)), dtype=object)
        s1 = np.empty_like(s0)
        a, b = 0, CAPACITY_INIT
        s0[0], s1[0] = a, b
        for j, m in enumerate(messages):
            a = (a + m) % P  # absorb: the first round reads s0 + m
            for r in range(per):
                a, b = self._round(a, b, r)
                s0[per * j + r + 1], s1[per * j + r + 1] = a, b
        return s0, s1

    def _round(self, a: int, b: int, r: int) -> tuple[int, int]:
        p = self.params
        c0, c1 = p.round_constants[r]
        (m00, m01), (m10, m11) = p.mds
        half = p.full_rounds // 2
        full = r < half or r >= half + p.partial_rounds
        x0 = pow(a + c0, 5, P)
        x1 = pow(b + c1, 5, P) if full else (b + c1) % P
        return (m00 * x0 + m01 * x1) % P, (m10 * x0 + m11 * x1) % P

    def hash_cells(self, layouter: Layouter, cells: AssignedCells | list[AssignedCells], name: str = "poseidon sponge",
                   positions: list[np.ndarray] | None = None) -> AssignedCells:
        """Absorb the given cells (copied into the message column) and return the digest cell (s0 of the last row).

        Cells are absorbed in the order given, or at `positions` (one array of message indices per run, together a
        permutation of 0..n-1) when the runs' natural order is not the message order.
        """
        runs = cells if isinstance(cells, list) else [cells]
        n = sum(len(c) for c in runs)
        if n == 0:
            raise CircuitError("Poseidon over zero elements has no digest (EZKL returns none either)")
        index = message_positions(runs, positions)
        cfg, per = self.config, self.rows_per_permutation
        known = all(c.values is not None for c in runs)
        messages = None
        if known:
            ordered = np.empty(n, dtype=object)
            ordered[np.concatenate(index)] = [int(v) % P for c in runs for v in c.values]
            messages = ordered.tolist()
        half = self.params.full_rounds // 2

        def assign(region: Region) -> AssignedCells:
            rows = self.rows_for(n)
            s0 = s1 = None
            if known:
                s0, s1 = self.witness(messages)
            region.enable_selector(cfg.q_init, 0)
            starts = np.arange(n, dtype=np.int64) * per
            region.enable_selector(cfg.q_absorb, starts)
            round_idx = np.arange(per)
            full = (round_idx < half) | (round_idx >= half + self.params.partial_rounds)
            full_rows = (starts[:, None] + round_idx[full][None, :]).reshape(-1)
            full_rows = full_rows[(full_rows % per) != 0]  # round 0 is the absorb round
            part_rows = (starts[:, None] + round_idx[~full][None, :]).reshape(-1)
            region.enable_selector(cfg.q_full, full_rows)
            region.enable_selector(cfg.q_partial, part_rows)
            rc = np.array(self.params.round_constants, dtype=object)
            region.assign_fixed(cfg.rc0, 0, np.tile(rc[:, 0], n) if region.with_values else None,
                                length=per * n)
            region.assign_fixed(cfg.rc1, 0, np.tile(rc[:, 1], n) if region.with_values else None,
                                length=per * n)
            for run, idx in zip(runs, index):
                region.copy_advice(run, cfg.message, starts[idx])
            # the message column is zero elsewhere; only absorb rows read it, so it needs no other cells
            states0 = region.assign_advice(cfg.s0, 0, s0, length=rows)
            region.assign_advice(cfg.s1, 0, s1, length=rows)
            return states0[rows - 1]

        with layouter.chip("Poseidon"):
            return layouter.assign_region(name, assign)


def message_positions(runs: list[AssignedCells], positions: list[np.ndarray] | None) -> list[np.ndarray]:
    """Message index of every cell of every run: consecutive by default, else checked to be a permutation."""
    lengths = [len(r) for r in runs]
    if positions is None:
        bounds = np.cumsum([0] + lengths)
        return [np.arange(a, b, dtype=np.int64) for a, b in zip(bounds[:-1], bounds[1:])]
    index = [np.asarray(p, dtype=np.int64).reshape(-1) for p in positions]
    if [len(p) for p in index] != lengths:
        raise CircuitError("positions must give one message index per cell of each run")
    flat = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
    if not np.array_equal(np.sort(flat), np.arange(len(flat))):
        raise CircuitError("positions must be a permutation of 0..n-1")
    return index
