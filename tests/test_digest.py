"""Base-model digest (specs/commitments.md): both formats' encodings and known answers, stability, parallel = serial,
streaming = in-memory, cache (format recorded, fingerprints, tampering), sensitivity, rejections."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

import zkref.models.digest as digest_module
from zkref.models.digest import (CACHE_FILENAME, FORMAT_TAGS, FORMAT_V1, FORMAT_V2, FORMAT_VERSION, ModelDigest,
                                 bytes_to_elements, combine_tensor_digests, model_digest, read_safetensors_header,
                                 sha256_elements, tensor_digest_v2, tensor_header_elements)
from zkref.primitives.field import P
from zkref.primitives.poseidon import poseidon_hash

WEIGHTS = "model.safetensors"
BOTH = pytest.mark.parametrize("fmt", [FORMAT_V1, FORMAT_V2])


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A 1-layer GPT-2 built locally (no download), saved with save_pretrained (safetensors)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    path = tmp_path_factory.mktemp("tiny_gpt2")
    transformers.GPT2Model(config).save_pretrained(path)
    assert (path / WEIGHTS).exists()
    return path


@pytest.fixture
def model_copy(tiny_gpt2, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_gpt2, dst)
    (dst / CACHE_FILENAME).unlink(missing_ok=True)
    return dst


def _sha_elements_by_hand(data: bytes) -> list[int]:
    h = hashlib.sha256(data).hexdigest()
    return [int(h[:32], 16), int(h[32:], 16)]


def test_v1_known_answer_and_encoding(tmp_path):
    """The old format, named: a hand-built file digested from the spec's /1 formulas, and the pinned answer."""
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    b = np.array([1, -1, 2], dtype=np.int8)
    save_file({"b": b, "a": a}, str(tmp_path / WEIGHTS))
    result = model_digest(tmp_path, progress=False, use_cache=False, format_version="zkref-model-digest/1")

    assert tensor_header_elements("a", "F32", (2, 2), 16) == [1, ord("a"), 12, 2, 2, 2, 16]
    a_elems = [1, ord("a"), 12, 2, 2, 2, 16, int.from_bytes(a.tobytes(), "little")]  # 16 bytes: one short chunk
    b_elems = [1, ord("b"), 3, 1, 3, 3, int.from_bytes(b.tobytes(), "little")]
    a_digest, b_digest = poseidon_hash(a_elems), poseidon_hash(b_elems)
    assert [t.name for t in result.tensors] == ["a", "b"]
    assert [t.digest for t in result.tensors] == [a_digest, b_digest]
    assert all(t.sha256 is None for t in result.tensors)
    assert result.digest == poseidon_hash([FORMAT_TAGS[FORMAT_V1], 2, a_digest, b_digest])
    assert FORMAT_TAGS[FORMAT_V1] == int.from_bytes(b"zkref-model-digest/1", "little")
    assert (result.n_tensors, result.n_parameters, result.n_bytes) == (2, 7, 19)
    assert result.format_version == FORMAT_V1 and result.n_elements == len(a_elems) + len(b_elems)
    assert result.hex == "0x0336df34fcd68db3f58622db0baf065bbc2baba23157e55c182c3b873068e4ae"


def test_v2_known_answer_and_encoding(tmp_path):
    """The default format: SHA-256 per tensor split into two big-endian 128-bit halves, then Poseidon; pinned."""
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    b = np.array([1, -1, 2], dtype=np.int8)
    save_file({"b": b, "a": a}, str(tmp_path / WEIGHTS))
    result = model_digest(tmp_path, progress=False, use_cache=False)

    assert FORMAT_VERSION == FORMAT_V2 == result.format_version
    a_elems = [1, ord("a"), 12, 2, 2, 2, 16, *_sha_elements_by_hand(a.tobytes())]
    b_elems = [1, ord("b"), 3, 1, 3, 3, *_sha_elements_by_hand(b.tobytes())]
    a_digest, b_digest = poseidon_hash(a_elems), poseidon_hash(b_elems)
    assert [t.digest for t in result.tensors] == [a_digest, b_digest]
    assert [t.sha256.hex() for t in result.tensors] == [
        "ad73b9acd6e4a74b2f5bb5386658ce3bb146cd040a1867646ab3b973fb6632b1",
        "ff5362460c9af23f9c102496f1233f56aa46d47a3c86cc445f6b894dd6c98b08"]
    assert result.digest == poseidon_hash([FORMAT_TAGS[FORMAT_V2], 2, a_digest, b_digest])
    assert FORMAT_TAGS[FORMAT_V2] == int.from_bytes(b"zkref-model-digest/2", "little")
    assert result.n_elements == len(a_elems) + len(b_elems)
    assert result.hex == "0x1bf531d67cf83e6461bacc446eda82e9a7c9564646bc4aea4acec7f45a369222"
    v1 = model_digest(tmp_path, progress=False, use_cache=False, format_version=FORMAT_V1)
    assert v1.digest != result.digest and v1 != result


@settings(max_examples=50)
@given(st.binary(min_size=32, max_size=32))
def test_sha256_elements_are_big_endian_halves(h):
    hi, lo = sha256_elements(h)
    assert f"{hi:032x}{lo:032x}" == h.hex() and hi < 2**128 and lo < 2**128


def test_sha256_elements_refuses_other_lengths():
    with pytest.raises(ValueError, match="32 bytes"):
        sha256_elements(b"\0" * 31)


def test_bytes_to_elements_uses_31_byte_little_endian_chunks():
    data = bytes(range(70))
    elems = bytes_to_elements(data)
    assert len(elems) == 3
    assert elems[0] == int.from_bytes(data[:31], "little") and elems[2] == int.from_bytes(data[62:], "little")
    assert all(e < 2**248 for e in bytes_to_elements(b"\xff" * 93))
    assert bytes_to_elements(b"") == []


@BOTH
def test_stable_and_parallel_equals_serial(tiny_gpt2, fmt):
    d1 = model_digest(tiny_gpt2, progress=False, use_cache=False, workers=1, format_version=fmt)
    d2 = model_digest(tiny_gpt2, progress=False, use_cache=False, workers=1, format_version=fmt)
    d3 = model_digest(tiny_gpt2, progress=True, use_cache=False, workers=2, format_version=fmt)
    assert d1 == d2 == d3
    assert 0 <= d1.digest < P and d1.n_tensors > 10 and d1.n_bytes == 4 * d1.n_parameters
    assert [t.name for t in d1.tensors] == sorted(t.name for t in d1.tensors)


@settings(max_examples=25, deadline=None)
@given(data=st.binary(min_size=0, max_size=5000), chunk=st.integers(1, 700), workers=st.integers(1, 3))
def test_v2_streamed_in_chunks_equals_in_memory(tmp_path_factory, data, chunk, workers):
    """Any read size and any worker count give the SHA-256 of the whole tensor (chunk boundaries do not matter)."""
    path = tmp_path_factory.mktemp("chunks")
    arrays = {"x": np.frombuffer(data, dtype=np.uint8), "y": np.frombuffer(data[::-1], dtype=np.uint8)}
    save_file(arrays, str(path / WEIGHTS))
    original = digest_module.READ_CHUNK_BYTES
    digest_module.READ_CHUNK_BYTES = chunk
    try:
        result = model_digest(path, progress=False, use_cache=False, workers=workers)
    finally:
        digest_module.READ_CHUNK_BYTES = original
    for t in result.tensors:
        raw = arrays[t.name].tobytes()
        assert t.sha256 == hashlib.sha256(raw).digest()
        assert t.digest == poseidon_hash(tensor_header_elements(t.name, "U8", (len(raw),), len(raw))
                                         + _sha_elements_by_hand(raw))


@BOTH
def test_streamed_tensor_digests_match_in_memory_recomputation(tiny_gpt2, fmt):
    result = model_digest(tiny_gpt2, progress=False, use_cache=False, format_version=fmt)
    arrays = load_file(str(tiny_gpt2 / WEIGHTS))
    assert set(arrays) == {t.name for t in result.tensors}
    for t in result.tensors[:4]:
        arr = arrays[t.name]
        assert (t.dtype, t.shape) == ("F32", arr.shape)
        data = arr.astype("<f4").tobytes()
        tail = bytes_to_elements(data) if fmt == FORMAT_V1 else _sha_elements_by_hand(data)
        assert t.digest == poseidon_hash(tensor_header_elements(t.name, t.dtype, t.shape, len(data)) + tail)
    assert result.digest == combine_tensor_digests([t.digest for t in result.tensors], fmt)


@BOTH
def test_digest_ignores_file_layout_and_metadata(model_copy, fmt):
    before = model_digest(model_copy, progress=False, use_cache=False, format_version=fmt)
    arrays = load_file(str(model_copy / WEIGHTS))
    reordered = dict(reversed(list(arrays.items())))
    save_file(reordered, str(model_copy / WEIGHTS), metadata={"note": "re-saved"})
    after = model_digest(model_copy, progress=False, use_cache=False, format_version=fmt)
    assert after.files != before.files  # different bytes on disk (provenance, not compared) ...
    assert after == before and after.digest == before.digest  # ... same tensors, same digest


@BOTH
def test_one_changed_weight_changes_the_digest(model_copy, fmt):
    before = model_digest(model_copy, progress=False, use_cache=True, format_version=fmt)
    arrays = load_file(str(model_copy / WEIGHTS))
    name = sorted(arrays)[len(arrays) // 2]
    arrays[name] = arrays[name].copy()
    arrays[name].reshape(-1)[-1] = np.nextafter(arrays[name].reshape(-1)[-1], np.float32(np.inf))  # one ulp
    save_file(arrays, str(model_copy / WEIGHTS))
    os.utime(model_copy / WEIGHTS, ns=(1, 1))  # a different mtime even on a coarse-clock filesystem
    after = model_digest(model_copy, progress=False, use_cache=True, format_version=fmt)
    assert not after.from_cache  # the file's fingerprint changed: stale cache ignored
    assert after.digest != before.digest
    changed = [a.name for a, b in zip(before.tensors, after.tensors) if a.digest != b.digest]
    assert changed == [name]


def test_cache_hit_stale_corrupt_and_tampered(model_copy):
    cache = model_copy / CACHE_FILENAME
    first = model_digest(model_copy, progress=False)
    assert not first.from_cache and cache.exists()
    record = json.loads(cache.read_text())
    assert record["digest"] == first.hex and record["format_version"] == FORMAT_V2
    (fingerprint,) = record["files"].values()
    assert fingerprint.startswith(f"size={(model_copy / WEIGHTS).stat().st_size};mtime_ns=")
    hit = model_digest(model_copy, progress=False)
    assert hit.from_cache and hit == first

    cache.write_text("{not json")
    again = model_digest(model_copy, progress=False)
    assert not again.from_cache and again == first
    assert json.loads(cache.read_text())["digest"] == first.hex  # rewritten

    for tamper in ("model digest", "tensor sha256", "tensor digest", "format"):
        doc = json.loads(cache.read_text())
        if tamper == "model digest":
            doc["digest"] = f"0x{(first.digest + 1) % P:064x}"  # no longer matches its tensor digests
        elif tamper == "tensor sha256":
            doc["tensors"][0]["sha256"] = "00" * 32  # the tensor digest no longer opens to it
        elif tamper == "tensor digest":
            doc["tensors"][0]["digest"] = f"0x{1:064x}"
        else:
            doc["format_version"] = "zkref-model-digest/0"
        cache.write_text(json.dumps(doc))
        assert not model_digest(model_copy, progress=False).from_cache, tamper

    st = (model_copy / WEIGHTS).stat()
    os.utime(model_copy / WEIGHTS, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: stale
    assert not model_digest(model_copy, progress=False).from_cache
    assert model_digest(model_copy, progress=False).from_cache

    no_cache = model_digest(model_copy, progress=False, use_cache=False)
    assert not no_cache.from_cache and no_cache == first
    assert ModelDigest.from_json(first.to_json()) == first


def test_cache_records_its_format(model_copy):
    cache = model_copy / CACHE_FILENAME
    v2 = model_digest(model_copy, progress=False)
    v1 = model_digest(model_copy, progress=False, format_version=FORMAT_V1)
    assert not v1.from_cache and v1.format_version == FORMAT_V1 and v1.digest != v2.digest
    record = json.loads(cache.read_text())
    assert record["format_version"] == FORMAT_V1 and "sha256" not in record["tensors"][0]
    (fingerprint,) = record["files"].values()
    assert fingerprint == hashlib.sha256((model_copy / WEIGHTS).read_bytes()).hexdigest()  # /1 keys: file SHA-256
    assert model_digest(model_copy, progress=False, format_version=FORMAT_V1).from_cache
    again = model_digest(model_copy, progress=False)  # a /1 record never answers a /2 request
    assert not again.from_cache and again == v2
    assert model_digest(model_copy, progress=False).from_cache


@BOTH
def test_other_dtypes_and_sharded_files(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    save_torch({"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}, str(tmp_path / "part-1.safetensors"))
    save_torch({"v": torch.tensor([1, 2], dtype=torch.int64), "e": torch.zeros(0, 4)},
               str(tmp_path / "part-2.safetensors"))
    result = model_digest(tmp_path, progress=False, use_cache=False, format_version=fmt)
    assert [(t.name, t.dtype, t.shape, t.n_bytes) for t in result.tensors] == [
        ("e", "F32", (0, 4), 0), ("v", "I64", (2,), 16), ("w", "BF16", (2, 3), 12)]
    empty = tensor_header_elements("e", "F32", (0, 4), 0)
    expected_e = (poseidon_hash(empty) if fmt == FORMAT_V1
                  else poseidon_hash(empty + _sha_elements_by_hand(b"")))
    assert result.tensors[0].digest == expected_e
    assert len(result.files) == 2

    save_torch({"w": torch.ones(1)}, str(tmp_path / "part-3.safetensors"))
    with pytest.raises(ValueError, match="appears in both"):
        model_digest(tmp_path, progress=False, use_cache=False, format_version=fmt)


def test_refuses_pickles_and_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError):
        model_digest(tmp_path / "absent", progress=False)
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        model_digest(tmp_path, progress=False)
    (tmp_path / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ValueError, match="never unpickles"):
        model_digest(tmp_path, progress=False)


def test_rejects_malformed_safetensors(tmp_path):
    path = tmp_path / WEIGHTS
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="too short"):
        read_safetensors_header(path)

    def write(header: dict, data: bytes) -> None:
        raw = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)

    write({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4)
    with pytest.raises(ValueError, match="outside the file"):
        read_safetensors_header(path)
    write({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8)
    with pytest.raises(ValueError, match="needs 12"):
        read_safetensors_header(path)
    write({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}}, b"\0")
    with pytest.raises(ValueError, match="unsupported dtype"):
        read_safetensors_header(path)
    write({"w": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
           "v": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, b"\0" * 3)
    with pytest.raises(ValueError, match="overlap"):
        read_safetensors_header(path)
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ValueError, match="implausible"):
        read_safetensors_header(path)
    write({}, b"")
    for bad in (0, -1, True, 1.5, 10**6):
        with pytest.raises(ValueError, match="workers"):
            model_digest(tmp_path, progress=False, use_cache=False, workers=bad)
    with pytest.raises(ValueError, match="unknown digest format"):
        model_digest(tmp_path, progress=False, use_cache=False, format_version="zkref-model-digest/3")


def test_refuses_a_file_changed_or_truncated_while_hashing(model_copy, monkeypatch):
    original = digest_module._hash_all_v2

    def append_then_hash(entries, workers, progress):
        with open(model_copy / WEIGHTS, "ab") as f:
            f.write(b"\0" * 8)
        return original(entries, workers, progress)

    monkeypatch.setattr(digest_module, "_hash_all_v2", append_then_hash)
    with pytest.raises(ValueError, match="changed while being hashed"):
        model_digest(model_copy, progress=False, use_cache=False)

    def truncate_then_hash(entries, workers, progress):
        os.truncate(model_copy / WEIGHTS, 1000)
        return original(entries, workers, progress)

    monkeypatch.setattr(digest_module, "_hash_all_v2", truncate_then_hash)
    with pytest.raises(ValueError, match="file ended inside a tensor"):
        model_digest(model_copy, progress=False, use_cache=False, workers=2)


def test_v2_record_opens_per_tensor(tiny_gpt2):
    """What a circuit would check for one tensor: its digest from (name, dtype, shape, n_bytes, SHA-256)."""
    result = model_digest(tiny_gpt2, progress=False, use_cache=False)
    record = result.to_json()
    t = record["tensors"][3]
    digest = tensor_digest_v2(t["name"], t["dtype"], tuple(t["shape"]), t["n_bytes"], bytes.fromhex(t["sha256"]))
    assert f"0x{digest:064x}" == t["digest"]
    assert ModelDigest.from_json(record).tensors[3].sha256 == bytes.fromhex(t["sha256"])


def test_progress_bar_on_stderr_only_when_asked(tiny_gpt2, capsys):
    model_digest(tiny_gpt2, progress=False, use_cache=False)
    assert capsys.readouterr() == ("", "")
    model_digest(tiny_gpt2, progress=True, use_cache=False)
    out, err = capsys.readouterr()
    assert out == "" and "model digest" in err
