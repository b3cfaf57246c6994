"""LoRABatch: several statements, one proof — identity, semantics, and the zkref backend's conjunction check."""
import dataclasses

import numpy as np
import pytest

from backends import get_backend
from zkref.lora.batch import (LoRABatch, batch_instance_offsets, batch_public_values, encode_batch_instances,
                              evaluate_batch)
from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness, encode_instances, evaluate


def member(d_in, d_out, rank, tokens=2, shift=6, **kw):
    return LoRAStatement(shape=LoRAShape(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens), shift=shift, **kw)


def witness_for(statement, seed):
    rng = np.random.default_rng(seed)
    s = statement.shape
    return LoRAWitness(A_q=rng.integers(-8, 8, s.a_shape), B_q=rng.integers(-8, 8, s.b_shape),
                       x_q=rng.integers(-128, 128, s.x_shape))


LAYER = LoRABatch.of([("q_proj", member(12, 12, 2)), ("k_proj", member(12, 4, 2)), ("v_proj", member(12, 4, 3))])
WITNESSES = [witness_for(s, i) for i, s in enumerate(LAYER.members)]


def test_the_batch_id_covers_members_names_and_order():
    ids = {LAYER.id,
           LoRABatch.of([("q_proj", member(12, 12, 2)), ("k_proj", member(12, 4, 2))]).id,
           LoRABatch(("q", "k_proj", "v_proj"), LAYER.members).id,
           LoRABatch(LAYER.names, (LAYER.members[1], LAYER.members[0], LAYER.members[2])).id,
           LoRABatch(LAYER.names, (member(12, 12, 2, shift=7),) + LAYER.members[1:]).id}
    assert len(ids) == 5 and LoRABatch.from_canonical(LAYER.canonical()) == LAYER
    assert LAYER.id not in {m.id for m in LAYER.members}


@pytest.mark.parametrize("build,match", [
    (lambda: LoRABatch((), ()), "1..64"), (lambda: LoRABatch(("a",), ()), "1..64"),
    (lambda: LoRABatch(("a", "a"), (member(2, 2, 1), member(2, 2, 1))), "distinct"),
    (lambda: LoRABatch(("bad name",), (member(2, 2, 1),)), "distinct"),
    (lambda: LoRABatch.from_canonical({"format": "x", "members": []}), "zkref-lora-batch/1"),
    (lambda: evaluate_batch(LAYER, WITNESSES[:2]), "2 witnesses"),
    (lambda: evaluate_batch(LAYER, WITNESSES[::-1]), "q_proj"),
])
def test_bad_batches_are_value_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_semantics_and_instances_are_the_members_in_order():
    traces = evaluate_batch(LAYER, WITNESSES)
    assert [t.y_q.tolist() for t in traces] == [evaluate(s, w).y_q.tolist() for s, w in zip(LAYER.members, WITNESSES)]
    publics = batch_public_values(LAYER, WITNESSES)
    vector = encode_batch_instances(LAYER, publics)
    offsets = batch_instance_offsets(LAYER)
    for i, (s, p) in enumerate(zip(LAYER.members, publics)):
        assert vector[offsets[i]:offsets[i] + len(encode_instances(s, p))] == encode_instances(s, p)


def test_zkref_proves_and_verifies_a_batch_and_rejects_tampering():
    backend = get_backend("zkref")
    result = backend.prove_batch(LAYER, WITNESSES)
    anchor = backend.anchor_batch(LAYER, WITNESSES)
    assert backend.verify_batch(LAYER, result.publics, result.proof, anchor=anchor)
    swapped = (result.publics[1], result.publics[0], result.publics[2])
    assert not backend.verify_batch(LAYER, swapped, result.proof, anchor=anchor)
    assert not backend.verify_batch(LAYER, result.publics[:2], result.proof, anchor=anchor)
    verdict = backend.verify_batch(LAYER, result.publics, result.proof, anchor=None)
    assert not verdict and "no adapter anchor pinned" in verdict.reason
    y = result.publics[2].y_q.copy()
    y[0, 0] += 1
    bumped = result.publics[:2] + (dataclasses.replace(result.publics[2], y_q=y),)
    verdict = backend.verify_batch(LAYER, bumped, result.proof, anchor=anchor)
    assert not verdict and "instances differ" in verdict.reason
    other = LoRABatch(("q", "k_proj", "v_proj"), LAYER.members)
    verdict = backend.verify_batch(other, result.publics, result.proof, anchor=anchor)
    assert not verdict and "batch members" in verdict.reason
    other_adapter = [witness_for(LAYER.members[0], 99)] + WITNESSES[1:]
    assert not backend.verify_batch(LAYER, result.publics, result.proof,
                                    anchor=backend.anchor_batch(LAYER, other_adapter))
    # a single member's proof is not a batch proof, and a batch proof is not a member's
    single = backend.prove(LAYER.members[0], WITNESSES[0])
    assert not backend.verify(LAYER.members[0], single.public, result.proof,
                              anchor=backend.anchor(LAYER.members[0], WITNESSES[0]))
    assert not backend.verify_batch(LAYER, result.publics, single.proof, anchor=anchor)
