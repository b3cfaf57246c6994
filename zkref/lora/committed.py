"""The LoRA statement with its private values bound by Poseidon commitments (the design note's fourth idea).

x_q becomes private: the public inputs are the activations commitment, the adapter commitment and y_q. The hashes
absorb exactly the cells the MAC chips read — the activation cells the first product copies from and token 0's
canonical weight cells — so a prover cannot hash one adapter and multiply with another.

    commit="plain":  digests equal zkref.commitments.activations_commitment / adapter_commitment (EZKL's "hashed")
    commit="packed": digests equal the *_packed functions; PackChip proves the packing (int8 x, int4 adapter)

Instance layout: column 0 "commitments" = [activations digest, adapter digest]; column 1 "y" = y_q row-major.
Spec: specs/lora-circuit.md, "Commitments in the circuit".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zkref.chips.batched_mac import CellSource, LaneMacConfig
from zkref.chips.pack_chip import PackChip, PackConfig
from zkref.chips.poseidon_chip import PoseidonChip, PoseidonConfig
from zkref.chips.requant import Requant, RequantConfig
from zkref.lora.commitments import (activations_commitment, activations_commitment_packed, adapter_commitment,
                          adapter_commitment_packed)
from zkref.plonkish.constraint_system import ConstraintSystem
from zkref.plonkish.expression import Column
from zkref.plonkish.layout import AssignedCells, Layouter, Region
from zkref.lora.circuit import LoRACircuit, _chip_class

COMMIT_MODES = ("plain", "packed")


@dataclass(frozen=True)
class CommittedLoRAConfig:
    commitments: Column
    y: Column
    x: Column
    mac: LaneMacConfig
    requant: RequantConfig
    poseidon: PoseidonConfig
    pack_x: PackConfig | None
    pack_w: PackConfig | None


@dataclass
class CommittedLoRACircuit:
    """Proves y_q = B_q·requant(A_q·x_q) with x_q, A_q, B_q private and bound by public Poseidon commitments."""

    lora: LoRACircuit
    commit: str = "plain"

    def __post_init__(self) -> None:
        if self.commit not in COMMIT_MODES:
            raise ValueError(f"commit must be one of {', '.join(COMMIT_MODES)}, got {self.commit!r}")

    @property
    def packed(self) -> bool:
        return self.commit == "packed"

    def commitments(self) -> tuple[int, int]:
        """(activations digest, adapter digest) computed outside the circuit by zkref.commitments."""
        c = self.lora
        if not c.has_values:
            raise ValueError("the circuit has no values: only the analytic pass is possible")
        if self.packed:
            return activations_commitment_packed(c.x_q, 8), adapter_commitment_packed(c.A_q, c.B_q, 4)
        return activations_commitment(c.x_q), adapter_commitment(c.A_q, c.B_q)

    def public_inputs(self) -> list[list[int]]:
        """[[activations digest, adapter digest], y_q row-major]."""
        return [list(self.commitments()), self.lora.y_q.reshape(-1).tolist()]

    def configure(self, cs: ConstraintSystem) -> CommittedLoRAConfig:
        c = self.lora
        commitments = cs.instance_column("commitments")
        y = cs.instance_column("y")
        x = cs.advice_column("x", equality=True)
        # tied_weights: the weight columns join the permutation so their cells can be copied into the hash
        mac = _chip_class(c.strategy).configure(cs, c.lanes, padding=c.padding, tied_weights=True)
        z_min, z_max = c.z_bounds
        requant = Requant.configure(cs, shift=c.shift, z_min=z_min, z_max=z_max)
        poseidon = PoseidonChip.configure(cs)
        pack_x = PackChip.configure(cs, 8, prefix="pack8") if self.packed else None
        pack_w = PackChip.configure(cs, 4, prefix="pack4") if self.packed else None
        return CommittedLoRAConfig(commitments, y, x, mac, requant, poseidon, pack_x, pack_w)

    def synthesize(self, config: CommittedLoRAConfig, layouter: Layouter) -> None:
        c = self.lora
        T, d, r = c.tokens, c.d_in, c.rank
        known = layouter.layout.with_values
        poseidon = PoseidonChip(config.poseidon)

        def assign_x(region: Region) -> AssignedCells:
            return region.assign_advice(config.x, 0, c.x_q.reshape(-1) if known else None, length=T * d)

        x_cells = layouter.assign_region("private activations x_q", assign_x, chip="Activations")
        x_source = CellSource(x_cells, np.arange(T * d, dtype=np.int64).reshape(T, d))
        stage1, stage2 = c.assign_products(layouter, config.mac, config.requant, x_source)
        layouter.constrain_instance(stage2.results, config.y, np.arange(T * c.d_out, dtype=np.int64))

        # the adapter's value order: lora_A row-major (index o·d_in + j), then lora_B row-major (r·d_in + o·r + j)
        w_runs = list(stage1.w_lanes) + list(stage2.w_lanes)
        w_pos = list(stage1.w_index) + [r * d + idx for idx in stage2.w_index]
        if self.packed:
            x_elements = PackChip(config.pack_x)
            x_elements.load_table(layouter)
            x_digest = poseidon.hash_cells(layouter, x_elements.pack_cells(layouter, [x_cells], "pack x_q"),
                                           "activations commitment")
            w_elements = PackChip(config.pack_w)
            w_elements.load_table(layouter)
            w_digest = poseidon.hash_cells(layouter, w_elements.pack_cells(layouter, w_runs, "pack adapter", w_pos),
                                           "adapter commitment")
        else:
            x_digest = poseidon.hash_cells(layouter, x_cells, "activations commitment")
            w_digest = poseidon.hash_cells(layouter, w_runs, "adapter commitment", positions=w_pos)
        layouter.constrain_instance(x_digest, config.commitments, [0])
        layouter.constrain_instance(w_digest, config.commitments, [1])
