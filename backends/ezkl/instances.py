"""The one place where the statement's canonical instances meet EZKL's `proof["instances"]`.

The canonical vector (`zkref.lora.statement.encode_instances`) is, in order: x's digest, the adapter digest, x_q
row-major, y_q row-major (each when the bindings call for it). EZKL's single instance column holds the same segments
in the same order (its Poseidon module's hashes first, then the graph's public inputs and outputs) with one
difference: the graph leaves y at scale `shift`, so EZKL's y cells are
y_q·2^shift. `to_ezkl` multiplies the y segment by 2^shift and `from_ezkl` multiplies it by the field inverse of
2^shift: both are bijections on field elements, so comparing in either form is the same comparison.

A batch (`batch_to_ezkl`, `batch_from_ezkl`) is the one place where the batch's canonical vector (members' vectors
concatenated) meets EZKL's column for several inputs and outputs: all x's in member order, then all y's, each y at
the batch's output scale.
"""
from __future__ import annotations

from collections.abc import Sequence

from backends.ezkl.batch import output_scales as batch_output_scales
from backends.ezkl.graph import output_scale
from zkref.lora.batch import LoRABatch, batch_instance_offsets
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


# ----------------------------------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------------------------------

def _batch_permutation(batch: LoRABatch) -> list[tuple[int, int, int]]:
    """EZKL's instance column for a batch as runs of the canonical vector: (canonical offset, length, y scale).

    The canonical vector (`zkref.lora.batch.encode_batch_instances`) is member by member: x_q then y_q of member 0, of
    member 1, … EZKL's column is category by category (`GraphCircuit::prepare_public_inputs`): every public input in
    graph input order (x_0, x_1, …), then every public output in graph output order (y_0, y_1, …), each output's
    cells at its output scale. Batches carry no digests (hashed bindings are refused, backends/ezkl/batch.py).
    """
    scales = batch_output_scales(batch)
    offsets = batch_instance_offsets(batch)
    runs: dict[str, list[tuple[int, int, int]]] = {"x_q": [], "y_q": []}
    for member, offset, scale in zip(batch.members, offsets, scales):
        for seg in instance_layout(member):
            if seg.name not in runs:
                raise ValueError(f"batches carry no {seg.name} instances")
            runs[seg.name].append((offset + seg.offset, seg.length, scale if seg.name == "y_q" else 0))
    return runs["x_q"] + runs["y_q"]


def batch_to_ezkl(batch: LoRABatch, instances: Sequence[int]) -> list[list[str]]:
    """EZKL's `proof["instances"]` (one column of felt strings) for the batch's canonical vector."""
    values = [int(v) % P for v in instances]
    column: list[str] = []
    for offset, length, scale in _batch_permutation(batch):
        factor = 1 << scale
        column += [felt_to_str(v * factor % P) for v in values[offset:offset + length]]
    return [column]


def batch_from_ezkl(batch: LoRABatch, ezkl_instances: object) -> list[int]:
    """The batch's canonical vector from EZKL's `proof["instances"]`; ValueError if malformed or not of this batch."""
    if not isinstance(ezkl_instances, list) or len(ezkl_instances) != 1 or not isinstance(ezkl_instances[0], list):
        raise ValueError("EZKL instances must be a list holding one column")
    column = ezkl_instances[0]
    if len(column) > MAX_INSTANCES:
        raise ValueError(f"{len(column)} instances exceed {MAX_INSTANCES}")
    runs = _batch_permutation(batch)
    total = sum(length for _, length, _ in runs)
    if len(column) != total:
        raise ValueError(f"batch {batch.id} has {total} public instances, EZKL's column holds {len(column)}")
    values = [felt_from_str(s) for s in column]
    out = [0] * total
    at = 0
    for offset, length, scale in runs:
        inverse = pow(1 << scale, -1, P)
        out[offset:offset + length] = [v * inverse % P for v in values[at:at + length]]
        at += length
    return out
