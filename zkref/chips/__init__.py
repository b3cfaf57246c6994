"""Reusable chips: configure columns/gates/lookups once, then lay out regions (vectorised, analytic pass included).

LoRA chips: MulTable (int4 × int8 product table), BatchedMac (L lookup lanes per row + accumulator), MulGate (the
gate-based alternative), Requant (int8 requantisation by a power of two). Other chips live in sibling modules.
"""
from zkref.chips.batched_mac import BatchedMac, CellSource, InstanceSource, LaneMac, LaneMacConfig, MatmulCells
from zkref.chips.mul_gate import MulGate
from zkref.chips.mul_table import MulTable, MulTableConfig
from zkref.chips.requant import Requant, RequantConfig, requant_reference

__all__ = ["BatchedMac", "CellSource", "InstanceSource", "LaneMac", "LaneMacConfig", "MatmulCells", "MulGate",
           "MulTable", "MulTableConfig", "Requant", "RequantConfig", "requant_reference"]
