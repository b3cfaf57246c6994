"""Several LoRA statements in one EZKL proof (backends/ezkl/batch.py, `EzklBackend.*_batch`): the batch graph's witness
is every member's evaluate(), what its params hold, EZKL's instance order for several inputs and outputs, real prove
and verify per binding family, the tamper matrix, what is refused.

Every test here runs EZKL (marked ``ezkl``). Circuits are tiny (k ≤ 11); the session shares one cache with
tests/test_ezkl_backend.py.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ezkl = pytest.importorskip("ezkl")

from backends import get_backend  # noqa: E402
from backends.base import AdapterAnchor, Proof, sha256_hex  # noqa: E402
from backends.ezkl import batch as batch_graph  # noqa: E402
from backends.ezkl import instances  # noqa: E402
from backends.ezkl.backend import EzklBackend, decode_batch_vk, encode_batch_vk, encode_vk  # noqa: E402
from backends.ezkl.settings import Visibility  # noqa: E402
from zkref.lora.batch import LoRABatch, batch_public_values, encode_batch_instances, evaluate_batch  # noqa: E402
from zkref.lora.statement import LoRAShape, LoRAStatement, LoRAWitness  # noqa: E402
from zkref.primitives.field import P, felt_from_str, felt_to_str, signed  # noqa: E402
from zkref.primitives.poseidon import poseidon_hash_fast  # noqa: E402

pytestmark = pytest.mark.ezkl


@pytest.fixture(scope="session")
def backend(ezkl_cache) -> EzklBackend:
    return get_backend("ezkl", cache_dir=ezkl_cache)


def member(d_in, d_out, rank, tokens, shift, x="public", adapter="fixed", y="public") -> LoRAStatement:
    return LoRAStatement(shape=LoRAShape(d_in=d_in, d_out=d_out, rank=rank, tokens=tokens), shift=shift,
                         x_binding=x, adapter_binding=adapter, y_binding=y)


def witness_for(statement: LoRAStatement, seed: int) -> LoRAWitness:
    rng = np.random.default_rng(seed)
    s = statement.shape
    return LoRAWitness(A_q=rng.integers(-8, 8, s.a_shape), B_q=rng.integers(-8, 8, s.b_shape),
                       x_q=rng.integers(-128, 128, s.x_shape))


def layer(**bindings) -> LoRABatch:
    """q, k, v of a toy layer: T = 2 for q (Freivalds), T = 1 for k and v (dots); shifts 3, 0 and 6 (the batch runs at
    scale 6: q and k are relabelled); k and v have the same shape (their publics can be swapped)."""
    return LoRABatch.of([("q_proj", member(12, 12, 2, 2, 3, **bindings)),
                         ("k_proj", member(12, 5, 2, 1, 0, **bindings)),
                         ("v_proj", member(12, 5, 2, 1, 6, **bindings))])


def ints(felts) -> list[int]:
    return [signed(felt_from_str(v)) for v in felts]


def ezkl_witness(batch: LoRABatch, witnesses, work, *, params: Visibility | None = None) -> dict:
    """EZKL's witness of the batch graph (no keys): gen_settings, compile, gen_witness."""
    work.mkdir(parents=True, exist_ok=True)
    batch_graph.export_batch_onnx(batch, witnesses, work / "m.onnx")
    run = batch_graph.batch_run_args(batch, logrows=12)
    if params is not None:
        run = dataclasses.replace(run, param_visibility=params, logrows=16)
    assert ezkl.gen_settings(str(work / "m.onnx"), str(work / "s.json"), py_run_args=run.py_run_args())
    assert ezkl.compile_circuit(str(work / "m.onnx"), str(work / "m.compiled"), str(work / "s.json"))
    (work / "in.json").write_text(json.dumps(batch_graph.batch_input_data(batch, [w.x_q for w in witnesses])))
    ezkl.gen_witness(str(work / "in.json"), str(work / "m.compiled"), str(work / "w.json"))
    return json.loads((work / "w.json").read_text())


# ----------------------------------------------------------------------------------------------------------------------
# The batch graph: EZKL's witness is each member's evaluate(); what its params hold
# ----------------------------------------------------------------------------------------------------------------------

@st.composite
def batches(draw):
    """2–3 members, d ≤ 8, r ≤ 3, T ≤ 2, shifts 0–7 (mixed: relabelled members), exact ties forced half the time."""
    members, witnesses = [], []
    for i in range(draw(st.integers(2, 3))):
        d_in, d_out, r, t = (draw(st.integers(1, 8)), draw(st.integers(1, 6)), draw(st.integers(1, 3)),
                             draw(st.integers(1, 2)))
        shift = draw(st.integers(0, 7))
        w = witness_for(member(d_in, d_out, r, t, shift), draw(st.integers(0, 2**32 - 1)))
        if shift and draw(st.booleans()):
            A, x = w.A_q.copy(), w.x_q.copy()
            x[:, :] = 0
            x[:, 0] = [(1 << (shift - 1)) * (-1) ** j for j in range(t)]
            A[:, 0] = [(-1) ** o * (1 + 2 * (o % 4)) for o in range(r)]
            w = LoRAWitness(A_q=A, B_q=w.B_q, x_q=x)
        members.append((f"m{i}", member(d_in, d_out, r, t, shift)))
        witnesses.append(w)
    return LoRABatch.of(members), witnesses


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=batches())
def test_batch_witness_equals_every_members_evaluate(tmp_path_factory, case):
    """Input i's cells are x_q of member i; output i's are its y_q·2^S (S the largest shift)."""
    batch, witnesses = case
    wit = ezkl_witness(batch, witnesses, tmp_path_factory.mktemp("bw"))
    traces = evaluate_batch(batch, witnesses)
    scale = batch_graph.batch_input_scale(batch)
    assert batch_graph.output_scales(batch) == [scale] * len(batch.members)
    for i, (w, trace) in enumerate(zip(witnesses, traces)):
        assert ints(wit["inputs"][i]) == w.x_q.reshape(-1).tolist()
        assert ints(wit["outputs"][i]) == (trace.y_q * (1 << scale)).reshape(-1).tolist()


@pytest.mark.parametrize("shifts", [(3,), (0,), (3, 3), (0, 0), (3, 6), (0, 6, 3), (4, 1, 4, 2)])
def test_batch_params_message_is_what_ezkl_holds(tmp_path, shifts):
    """Poseidon over `batch_params_message` equals EZKL's hash of the batch graph's params (hashed visibility, used
    here only to read what EZKL holds): constants merged by value across members, shared ones at scale 0."""
    batch = LoRABatch.of([(f"m{i}", member(4 - i % 2, 3, 2 - i % 2, 1, s)) for i, s in enumerate(shifts)])
    witnesses = [witness_for(m, 50 + i) for i, m in enumerate(batch.members)]
    wit = ezkl_witness(batch, witnesses, tmp_path, params=Visibility.HASHED)
    assert felt_from_str(wit["processed_params"]["poseidon_hash"][0]) == \
        poseidon_hash_fast(batch_graph.batch_params_message(batch, witnesses))


def test_one_member_batch_params_are_the_statements():
    from backends.ezkl import graph

    m = member(6, 4, 2, 1, 5)
    w = witness_for(m, 1)
    assert batch_graph.batch_params_message(LoRABatch.of([("m", m)]), [w]) == graph.params_message(w.A_q, w.B_q, 5)


def test_ezkl_instance_order_for_several_inputs_and_outputs():
    """Canonical: member by member (x_q, y_q). EZKL: every x in input order, then every y·2^S in output order."""
    batch = layer()
    witnesses = [witness_for(m, i) for i, m in enumerate(batch.members)]
    publics = batch_public_values(batch, witnesses)
    canonical = encode_batch_instances(batch, publics)
    column = instances.batch_to_ezkl(batch, canonical)[0]
    scale = batch_graph.batch_input_scale(batch)
    expected = [v for p in publics for v in p.x_q.reshape(-1).tolist()] + \
        [int(v) << scale for p in publics for v in p.y_q.reshape(-1).tolist()]
    assert column == [felt_to_str(v % P) for v in expected]
    assert instances.batch_from_ezkl(batch, [column]) == canonical
    with pytest.raises(ValueError, match="public instances"):
        instances.batch_from_ezkl(batch, [column[:-1]])
    polycommit_x = layer(x="polycommit")
    canonical = encode_batch_instances(polycommit_x, batch_public_values(polycommit_x, witnesses))
    assert len(instances.batch_to_ezkl(polycommit_x, canonical)[0]) == sum(p.y_q.size for p in publics)


# ----------------------------------------------------------------------------------------------------------------------
# Prove, verify, tamper
# ----------------------------------------------------------------------------------------------------------------------

MODES = {"public-fixed-public": dict(x="public", adapter="fixed", y="public"),
         "polycommit-polycommit-polycommit": dict(x="polycommit", adapter="polycommit", y="polycommit")}


@pytest.fixture(scope="session")
def proven(backend):
    """Per mode: the batch, witnesses, its proof and anchor, the anchor of the batch with another q adapter, and a
    proof of the q member alone."""
    out = {}
    for name, kw in MODES.items():
        batch = layer(**kw)
        witnesses = [witness_for(m, 70 + i) for i, m in enumerate(batch.members)]
        other = [witness_for(batch.members[0], 99)] + witnesses[1:]
        progress: list[str] = []
        out[name] = dict(batch=batch, witnesses=witnesses, result=backend.prove_batch(batch, witnesses,
                                                                                    progress=progress.append),
                         progress=progress, anchor=backend.anchor_batch(batch, witnesses),
                         other_anchor=backend.anchor_batch(batch, other),
                         single=backend.prove(batch.members[0], witnesses[0]))
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_prove_and_verify_a_batch(backend, proven, mode):
    case = proven[mode]
    batch, result = case["batch"], case["result"]
    expected = batch_public_values(batch, case["witnesses"])
    assert all(a.equals(b) for a, b in zip(result.publics, expected))
    proof = result.proof
    assert proof.statement_id == batch.id and list(proof.instances) == encode_batch_instances(batch, expected)
    assert proof.meta["members"] == list(batch.names) and proof.meta["logrows"] <= 11
    assert case["progress"][-2:] == ["witness", "prove"]
    verdict = backend.verify_batch(batch, result.publics, proof, anchor=case["anchor"])
    assert verdict and "pinned" in verdict.reason
    for hollow in (None, dataclasses.replace(case["anchor"], vk_hash=None)):
        verdict = backend.verify_batch(batch, result.publics, proof, anchor=hollow)
        assert not verdict and ("no adapter anchor" in verdict.reason or "pins no verifying key" in verdict.reason)


def _swap_kv(publics):
    return (publics[0], publics[2], publics[1])


def _bump_y(publics, index):
    y = publics[index].y_q.copy()
    y[0, 0] += 1
    return publics[:index] + (dataclasses.replace(publics[index], y_q=y),) + publics[index + 1:]


def pin(target, proof: Proof) -> AdapterAnchor:
    """An anchor pinning exactly `proof`'s verifying key for `target`: what gets a tampered proof past the binding
    checks, so that the check under test (EZKL's, or the key's batch id) is the one that refuses it."""
    return AdapterAnchor(backend="ezkl", statement_id=target.id, vk_hash=sha256_hex(proof.vk),
                         commitment=proof.commitments.get("adapter"))


def _flip(proof: Proof) -> Proof:
    data = json.loads(proof.data)
    data["proof"][len(data["proof"]) // 2] ^= 1
    return dataclasses.replace(proof, data=json.dumps(data).encode())


@pytest.mark.parametrize("mode", list(MODES))
def test_batch_tamper_matrix(backend, proven, mode):
    """Each tampering is a falsy Verdict with its reason; nothing raises."""
    case = proven[mode]
    batch, result, anchor = case["batch"], case["result"], case["anchor"]
    publics, proof = result.publics, result.proof
    polycommit = mode.startswith("polycommit")
    renamed = LoRABatch(("q", "k_proj", "v_proj"), batch.members)
    reordered = LoRABatch(("q_proj", "v_proj", "k_proj"), (batch.members[0], batch.members[2], batch.members[1]))
    _, settings_in_vk, ezkl_vk = decode_batch_vk(proof.vk)
    reencoded = encode_batch_vk(renamed.id, settings_in_vk, ezkl_vk)       # the same circuit under the other id
    rows = {
        "swapped k and v publics": (batch, _swap_kv(publics), proof, anchor,
                                    "EZKL rejected" if polycommit else "instances differ"),
        "v's y bumped": (batch, _bump_y(publics, 2), proof, anchor,
                         "EZKL rejected" if polycommit else "instances differ"),
        "another batch: other names": (renamed, publics, proof, None, "proof is for statement"),
        "another batch: other order": (reordered, _swap_kv(publics), proof, None, "proof is for statement"),
        "renamed proof, same circuit, its key pinned": (renamed, publics,
                                                        dataclasses.replace(proof, statement_id=renamed.id),
                                                        pin(renamed, proof), "the verifying key is batch"),
        "renamed proof, vk re-encoded, the contributor's anchor": (renamed, publics, dataclasses.replace(
            proof, statement_id=renamed.id, vk=reencoded, vk_hash=sha256_hex(reencoded)), anchor,
            "anchor is for another statement"),
        "another adapter's pinned anchor": (batch, publics, proof, case["other_anchor"],
                                            "differs from the pinned one"),
        "a member's proof as the batch's": (batch, publics, case["single"].proof, None, "proof is for statement"),
        "a member's proof relabelled": (batch, publics, dataclasses.replace(case["single"].proof,
                                                                           statement_id=batch.id),
                                        pin(batch, case["single"].proof),
                                        "public instances" if not polycommit else "batch verifying key"),
        "a single-statement vk": (batch, publics, dataclasses.replace(
            proof, vk=encode_vk(proof.settings, b"\x01"), vk_hash=None),
                                  pin(batch, dataclasses.replace(proof, vk=encode_vk(proof.settings, b"\x01"))),
                                  "batch verifying key"),
        "proof bytes": (batch, publics, _flip(proof), anchor, "EZKL rejected"),
        "two members' publics only": (batch, publics[:2], proof, anchor, "public values do not fit"),
    }
    if polycommit:
        lying = dataclasses.replace(proof, commitments={"adapter": case["other_anchor"].commitment})
        # the verifier pins this circuit's key and the other adapter's commitment; the proof claims that commitment
        other_commitment = dataclasses.replace(anchor, commitment=case["other_anchor"].commitment)
        rows["proof claims another adapter's commitment"] = (batch, publics, lying, other_commitment,
                                                             "EZKL rejected")
        rows["x of another call"] = (batch, (dataclasses.replace(publics[0], x_q=publics[0].x_q[::-1].copy()),)
                                     + publics[1:], proof, anchor, "EZKL rejected")
    for name, (b, pub, prf, anc, reason) in rows.items():
        verdict = backend.verify_batch(b, pub, prf, anchor=anc)
        assert not verdict, f"{name}: {verdict.reason}"
        assert reason in verdict.reason, f"{name}: {verdict.reason}"
    # without a pinned anchor nothing binds a circuit to anyone (as for one statement): the same circuit re-encoded
    # under another batch's id is refused unpinned, and verifies only under an anchor that pins exactly that key
    relabelled = dataclasses.replace(proof, statement_id=renamed.id, vk=reencoded, vk_hash=sha256_hex(reencoded))
    assert "no adapter anchor pinned" in backend.verify_batch(renamed, publics, relabelled, anchor=None).reason
    assert backend.verify_batch(renamed, publics, relabelled, anchor=pin(renamed, relabelled))
    # and the other way round: the batch's proof is not its first member's
    verdict = backend.verify(batch.members[0], publics[0], proof, anchor=anchor)
    assert not verdict and "proof is for statement" in verdict.reason
    forged = dataclasses.replace(proof, statement_id=batch.members[0].id)
    verdict = backend.verify(batch.members[0], publics[0], forged, anchor=pin(batch.members[0], forged))
    assert not verdict


def test_unsupported_batches(backend):
    cases = {
        "hashed x": (layer(x="hashed"), "batch-level digest"),
        "hashed adapter": (layer(adapter="hashed"), "batch-level digest"),
        "packed": (layer(adapter="hashed-packed"), "batch-level digest"),
        "unbound": (layer(adapter="unbound"), "binds nothing"),
        "mixed bindings": (LoRABatch.of([("a", member(4, 4, 1, 1, 2)), ("b", member(4, 4, 1, 1, 2, y="polycommit"))]),
                           "the same way"),
        "shift 17": (LoRABatch.of([("a", member(4, 4, 1, 1, 17))]), "shift 17"),
    }
    for name, (batch, reason) in cases.items():
        support = backend.supports_batch(batch)
        assert not support and reason in support.reason, (name, support.reason)
    with pytest.raises(ValueError, match="cannot prove this batch"):
        batch = cases["unbound"][0]
        backend.prove_batch(batch, [witness_for(m, i) for i, m in enumerate(batch.members)])


# ----------------------------------------------------------------------------------------------------------------------
# zkref.pipeline.prove_modules: the measured default and its overrides
# ----------------------------------------------------------------------------------------------------------------------

def _prepared(d_in, d_out, rank, tokens, seed, **bindings):
    from zkref.pipeline import Bindings, prepare, random_call

    base = random_call(d_in, d_out, rank, tokens, seed)
    return prepare(base.quantised, base.x, Bindings(**bindings))


def test_prove_modules_batches_by_default_and_obeys_overrides(backend):
    from zkref.pipeline import ProvingMode, prove_modules

    pc = dict(x="polycommit", y="polycommit")
    named = [("q_proj", _prepared(16, 16, 2, 1, 1, **pc)), ("k_proj", _prepared(16, 8, 2, 1, 2, **pc)),
             ("v_proj", _prepared(16, 8, 2, 1, 3, **pc))]
    auto = prove_modules(named, backend)
    assert auto.choice.batch and "predicted rows" in auto.choice.reason and auto.ok
    assert auto.batch_result is not None and auto.batch_anchor.statement_id == auto.batch.id
    single = prove_modules(named, backend, mode="per-module")
    assert not single.choice.batch and len(single.modules) == 3 and single.ok
    assert all(np.array_equal(auto.y_q[n], single.y_q[n]) for n in auto.names)
    mixed = named[:2] + [("v_proj", _prepared(16, 8, 2, 1, 3, x="public", y="polycommit"))]
    fallback = prove_modules(mixed, backend, mode=ProvingMode.AUTO)
    assert not fallback.choice.batch and "cannot batch" in fallback.choice.reason and fallback.ok
    with pytest.raises(ValueError, match="cannot prove these modules as one batch"):
        prove_modules(mixed, backend, mode="batch")


def test_the_default_rule_stops_at_the_largest_measured_batch(backend):
    """Beyond BATCH_MAX_ROWS predicted rows the default is one proof per module (decided without running EZKL)."""
    from backends.ezkl.cost import predict
    from zkref.pipeline import BATCH_MAX_ROWS, choose_proving

    def q(name):
        return (name, member(4096, 4096, 16, 1, 10, x="polycommit", y="polycommit"))

    three, five = LoRABatch.of([q(f"q{i}") for i in range(3)]), LoRABatch.of([q(f"q{i}") for i in range(5)])
    assert predict(three).rows <= BATCH_MAX_ROWS < predict(five).rows
    assert choose_proving(three, backend).batch
    choice = choose_proving(five, backend)
    assert not choice.batch and "largest batch measured" in choice.reason
    public = LoRABatch.of([(f"q{i}", member(4096, 4096, 16, 1, 10)) for i in range(5)])
    assert choose_proving(public, get_backend("zkref")).batch           # mock checks: no size limit
