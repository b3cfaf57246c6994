"""A circuit proving a Poseidon commitment to private values: digest public, values private, packed or not.

Unpacked, it computes EZKL's hash (one sponge over the values as felts, negatives as p-|v|). Packed, it first proves
the packing of `bits`-bit signed values (zkref.packing's layout) and hashes the packed elements: the same
`commitments.*_packed` digest, at a fraction of the rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zkref.chips.pack_chip import PackChip, PackConfig
from zkref.chips.poseidon_chip import PoseidonChip, PoseidonConfig
from zkref.plonkish.constraint_system import ConstraintSystem
from zkref.plonkish.expression import Column
from zkref.plonkish.layout import Layouter, Region
from zkref.primitives.packing import pack
from zkref.primitives.poseidon import poseidon_hash
from zkref.primitives.field import P


@dataclass(frozen=True)
class CommitmentConfig:
    values: Column
    digest: Column
    poseidon: PoseidonConfig
    pack: PackConfig | None


@dataclass
class CommitmentCircuit:
    """Prove digest = Poseidon(values) (or Poseidon(pack(values, bits))) for private `values`.

    `values` may be None with `count` set: the analytic pass, for accounting.
    """

    values: tuple[int, ...] | None = None
    bits: int | None = None
    count: int | None = None

    def __post_init__(self):
        if self.values is None and self.count is None:
            raise ValueError("give values or a count")
        if self.values is not None:
            self.count = len(self.values)
        if self.count < 1:
            raise ValueError("a commitment needs at least one value")

    def digest(self) -> int:
        vals = [int(v) for v in self.values]
        if self.bits is None:
            return poseidon_hash([v % P for v in vals])
        return poseidon_hash(pack(vals, self.bits))

    def public_inputs(self) -> list[list[int]]:
        return [[self.digest()]]

    def configure(self, cs: ConstraintSystem) -> CommitmentConfig:
        values = cs.advice_column("values", equality=True)
        digest = cs.instance_column("digest")
        pack_cfg = PackChip.configure(cs, self.bits) if self.bits is not None else None
        return CommitmentConfig(values, digest, PoseidonChip.configure(cs), pack_cfg)

    def synthesize(self, config: CommitmentConfig, layouter: Layouter) -> None:
        known = layouter.layout.with_values
        vals = np.array(self.values, dtype=object) if known else None

        def assign(region: Region):
            return region.assign_advice(config.values, 0, vals, length=self.count)

        cells = layouter.assign_region("private values", assign, chip="Values")
        if config.pack is not None:
            packer = PackChip(config.pack)
            packer.load_table(layouter)
            cells = packer.pack_cells(layouter, [cells])
        digest = PoseidonChip(config.poseidon).hash_cells(layouter, cells)
        layouter.constrain_instance(digest, config.digest, [0])
