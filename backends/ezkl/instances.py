"""The one place where the statement's canonical instances meet EZKL's `proof["instances"]`.

The canonical vector (`zkref.lora.statement.encode_instances`) is, in order: x's digest, the adapter digest, x_q
row-major, y_q row-major (each when the bindings call for it). EZKL's single instance column holds the same segments
in the same order (its Poseidon module's hashes first, then the graph's public inputs and outputs) with one
difference: the graph leaves y at scale `shift`, so EZKL's y cells are
y_q·2^shift. `to_ezkl` multiplies the y segment by 2^shift and `from_ezkl` multiplies it by the field inverse of
2^shift: both are bijections on field elements, so comparing in either form is the same comparison.
"""
from __future__ import annotations

from collections.abc import Sequence

from backends.ezkl.graph import output_scale
from zkref.lora.statement import LoRAStatement, instance_layout
from zkref.primitives.field import P, felt_from_str, felt_to_str

MAX_INSTANCES = 1 << 24
"""More instances than any supported statement has: EZKL's list is refused beyond this before it is decoded."""


def _y_segment(statement: LoRAStatement) -> slice | None:
    for seg in instance_layout(statement):
        if seg.name == "y_q":
            return slice(seg.offset, seg.offset + seg.length)
    return None


def to_ezkl(statement: LoRAStatement, instances: Sequence[int]) -> list[list[str]]:
    """EZKL's `proof["instances"]` (one column of felt strings) for the canonical vector."""
    values = [int(v) % P for v in instances]
    y = _y_segment(statement)
    if y is not None:
        factor = 1 << output_scale(statement)
        values[y] = [v * factor % P for v in values[y]]
    return [[felt_to_str(v) for v in values]]


def from_ezkl(statement: LoRAStatement, ezkl_instances: object) -> list[int]:
    """The canonical vector from EZKL's `proof["instances"]`; ValueError if malformed or not of this statement."""
    if not isinstance(ezkl_instances, list) or len(ezkl_instances) != 1 or not isinstance(ezkl_instances[0], list):
        raise ValueError("EZKL instances must be a list holding one column")
    column = ezkl_instances[0]
    if len(column) > MAX_INSTANCES:
        raise ValueError(f"{len(column)} instances exceed {MAX_INSTANCES}")
    values = [felt_from_str(s) for s in column]
    y = _y_segment(statement)
    if y is not None:
        inverse = pow(1 << output_scale(statement), -1, P)
        values[y] = [v * inverse % P for v in values[y]]
    return values
