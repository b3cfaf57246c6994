"""The proving job (plain JSON and safetensors bytes in, JSON out) and the local process pool that runs it."""
import concurrent.futures as cf
import json
import os

import numpy as np
import pytest

from backends import get_backend
from zkref.lora.statement import LoRAPublic, LoRAShape, LoRAStatement
from zkref.protocol import messages as m
from zkref.protocol.provers import JOB_FORMAT, ProcessProver, job_request, run_job

STATEMENT = LoRAStatement(shape=LoRAShape(d_in=8, d_out=6, rank=2, tokens=3), shift=4)
RNG = np.random.default_rng(0)
A_Q, B_Q, X_Q = RNG.integers(-8, 8, (2, 8)), RNG.integers(-8, 8, (6, 2)), RNG.integers(-128, 128, (3, 8))


def test_prove_and_anchor_jobs_give_what_the_backend_verifies():
    spec, tensors = job_request(kind="prove", backend="zkref", options={}, statement=STATEMENT, A_q=A_Q, B_q=B_Q,
                                x_q=X_Q)
    assert isinstance(spec, str) and isinstance(tensors, bytes)
    answer = json.loads(run_job(spec, tensors))
    proof = m.ProofMessage.model_validate(answer["proof"]).proof()
    public = LoRAPublic.from_json(STATEMENT, answer["public"])
    assert answer["worker"]["pid"] == os.getpid() and "prove" in answer["timings"]
    anchor_spec, anchor_tensors = job_request(kind="anchor", backend="zkref", options={}, statement=STATEMENT,
                                              A_q=A_Q, B_q=B_Q, x_q=None)
    anchor = m.AnchorInfo.model_validate(json.loads(run_job(anchor_spec, anchor_tensors))["anchor"]).anchor()
    backend = get_backend("zkref")
    assert np.array_equal(public.x_q, X_Q)
    assert backend.verify(STATEMENT, public, proof, anchor=anchor)
    other = job_request(kind="anchor", backend="zkref", options={}, statement=STATEMENT,
                        A_q=np.clip(-A_Q, -8, 7), B_q=B_Q, x_q=None)
    other_anchor = m.AnchorInfo.model_validate(json.loads(run_job(*other))["anchor"]).anchor()
    assert not backend.verify(STATEMENT, public, proof, anchor=other_anchor)


def test_jobs_are_checked():
    with pytest.raises(ValueError, match="not a zkref-proving-job"):
        run_job(json.dumps({"kind": "prove"}), b"")
    spec, tensors = job_request(kind="prove", backend="zkref", options={}, statement=STATEMENT, A_q=A_Q, B_q=B_Q,
                                x_q=X_Q)
    with pytest.raises(ValueError, match="shape"):
        run_job(spec, job_request(kind="prove", backend="zkref", options={}, statement=STATEMENT, A_q=A_Q[:1],
                                  B_q=B_Q[:, :1], x_q=X_Q)[1])
    with pytest.raises(ValueError, match="job kind"):
        job_request(kind="guess", backend="zkref", options={}, statement=STATEMENT, A_q=A_Q, B_q=B_Q, x_q=X_Q)


def test_process_pool_runs_jobs_elsewhere_and_recovers_from_a_crashed_worker():
    prover = ProcessProver(workers=1)
    try:
        (worker,) = prover.warm_up()
        assert worker["pid"] != os.getpid()
        spec, tensors = job_request(kind="prove", backend="zkref", options={}, statement=STATEMENT, A_q=A_Q,
                                    B_q=B_Q, x_q=X_Q)
        assert json.loads(prover.submit(spec, tensors).result(timeout=60))["proof"]["statement_id"] == STATEMENT.id
        bad = job_request(kind="prove", backend="nope", options={}, statement=STATEMENT, A_q=A_Q, B_q=B_Q, x_q=X_Q)
        with pytest.raises(ValueError, match="unknown backend"):
            prover.submit(*bad).result(timeout=60)
        crashed = prover._pool.submit(os._exit, 3)  # a worker dies (out of memory, a native crash, …)
        with pytest.raises(cf.process.BrokenProcessPool):
            crashed.result(timeout=60)
        again = prover.submit(json.dumps({"format": JOB_FORMAT, "kind": "ping"}), b"")
        assert json.loads(again.result(timeout=60))["worker"]["pid"] not in (worker["pid"], os.getpid())
    finally:
        prover.shutdown()
