"""Base-model digest (specs/commitments.md): encoding, stability, parallel = serial, cache, sensitivity, rejections."""
from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from zkref.models.digest import (CACHE_FILENAME, FORMAT_TAG, FORMAT_VERSION, ModelDigest, bytes_to_elements,
                          combine_tensor_digests, model_digest, read_safetensors_header, tensor_header_elements)
from zkref.primitives.field import P
from zkref.primitives.poseidon import poseidon_hash

WEIGHTS = "model.safetensors"


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


def test_known_answer_and_encoding(tmp_path):
    """A hand-built file, digested from the spec's formulas with the reference Poseidon, and pinned."""
    a = np.array([[1, 2], [3, 4]], dtype=np.float32)
    b = np.array([1, -1, 2], dtype=np.int8)
    save_file({"b": b, "a": a}, str(tmp_path / WEIGHTS))
    result = model_digest(tmp_path, progress=False, use_cache=False)

    assert tensor_header_elements("a", "F32", (2, 2), 16) == [1, ord("a"), 12, 2, 2, 2, 16]
    a_elems = [1, ord("a"), 12, 2, 2, 2, 16, int.from_bytes(a.tobytes(), "little")]  # 16 bytes: one short chunk
    b_elems = [1, ord("b"), 3, 1, 3, 3, int.from_bytes(b.tobytes(), "little")]
    a_digest, b_digest = poseidon_hash(a_elems), poseidon_hash(b_elems)
    assert [t.name for t in result.tensors] == ["a", "b"]
    assert [t.digest for t in result.tensors] == [a_digest, b_digest]
    assert result.digest == poseidon_hash([FORMAT_TAG, 2, a_digest, b_digest])
    assert FORMAT_TAG == int.from_bytes(b"zkref-model-digest/1", "little")
    assert (result.n_tensors, result.n_parameters, result.n_bytes) == (2, 7, 19)
    assert result.format_version == FORMAT_VERSION
    assert result.hex == "0x0336df34fcd68db3f58622db0baf065bbc2baba23157e55c182c3b873068e4ae"


def test_bytes_to_elements_uses_31_byte_little_endian_chunks():
    data = bytes(range(70))
    elems = bytes_to_elements(data)
    assert len(elems) == 3
    assert elems[0] == int.from_bytes(data[:31], "little") and elems[2] == int.from_bytes(data[62:], "little")
    assert all(e < 2**248 for e in bytes_to_elements(b"\xff" * 93))
    assert bytes_to_elements(b"") == []


def test_stable_and_parallel_equals_serial(tiny_gpt2):
    d1 = model_digest(tiny_gpt2, progress=False, use_cache=False, workers=1)
    d2 = model_digest(tiny_gpt2, progress=False, use_cache=False, workers=1)
    d3 = model_digest(tiny_gpt2, progress=True, use_cache=False, workers=2)
    assert d1 == d2 == d3
    assert 0 <= d1.digest < P and d1.n_tensors > 10 and d1.n_bytes == 4 * d1.n_parameters
    assert [t.name for t in d1.tensors] == sorted(t.name for t in d1.tensors)


def test_streamed_tensor_digests_match_in_memory_recomputation(tiny_gpt2):
    result = model_digest(tiny_gpt2, progress=False, use_cache=False)
    arrays = load_file(str(tiny_gpt2 / WEIGHTS))
    assert set(arrays) == {t.name for t in result.tensors}
    for t in result.tensors[:4]:
        arr = arrays[t.name]
        assert (t.dtype, t.shape) == ("F32", arr.shape)
        data = arr.astype("<f4").tobytes()
        assert t.digest == poseidon_hash(tensor_header_elements(t.name, t.dtype, t.shape, len(data))
                                         + bytes_to_elements(data))
    assert result.digest == combine_tensor_digests([t.digest for t in result.tensors])


def test_digest_ignores_file_layout_and_metadata(model_copy):
    before = model_digest(model_copy, progress=False, use_cache=False)
    arrays = load_file(str(model_copy / WEIGHTS))
    reordered = dict(reversed(list(arrays.items())))
    save_file(reordered, str(model_copy / WEIGHTS), metadata={"note": "re-saved"})
    after = model_digest(model_copy, progress=False, use_cache=False)
    assert after.files != before.files  # different bytes on disk (provenance, not compared) ...
    assert after == before and after.digest == before.digest  # ... same tensors, same digest


def test_one_changed_weight_changes_the_digest(model_copy):
    before = model_digest(model_copy, progress=False, use_cache=True)
    arrays = load_file(str(model_copy / WEIGHTS))
    name = sorted(arrays)[len(arrays) // 2]
    arrays[name] = arrays[name].copy()
    arrays[name].reshape(-1)[-1] = np.nextafter(arrays[name].reshape(-1)[-1], np.float32(np.inf))  # one ulp
    save_file(arrays, str(model_copy / WEIGHTS))
    after = model_digest(model_copy, progress=False, use_cache=True)
    assert not after.from_cache  # the file's SHA-256 changed: stale cache ignored
    assert after.digest != before.digest
    changed = [a.name for a, b in zip(before.tensors, after.tensors) if a.digest != b.digest]
    assert changed == [name]


def test_cache_hit_stale_and_corrupt(model_copy):
    cache = model_copy / CACHE_FILENAME
    first = model_digest(model_copy, progress=False)
    assert not first.from_cache and cache.exists()
    assert json.loads(cache.read_text())["digest"] == first.hex
    hit = model_digest(model_copy, progress=False)
    assert hit.from_cache and hit == first

    cache.write_text("{not json")
    again = model_digest(model_copy, progress=False)
    assert not again.from_cache and again == first
    assert json.loads(cache.read_text())["digest"] == first.hex  # rewritten

    doc = json.loads(cache.read_text())
    doc["digest"] = f"0x{(first.digest + 1) % P:064x}"  # tampered: no longer matches its tensor digests
    cache.write_text(json.dumps(doc))
    assert not model_digest(model_copy, progress=False).from_cache

    doc = json.loads(cache.read_text())
    doc["format_version"] = "zkref-model-digest/0"
    cache.write_text(json.dumps(doc))
    assert not model_digest(model_copy, progress=False).from_cache

    no_cache = model_digest(model_copy, progress=False, use_cache=False)
    assert not no_cache.from_cache and no_cache == first
    assert ModelDigest.from_json(first.to_json()) == first


def test_other_dtypes_and_sharded_files(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    save_torch({"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)}, str(tmp_path / "part-1.safetensors"))
    save_torch({"v": torch.tensor([1, 2], dtype=torch.int64), "e": torch.zeros(0, 4)},
               str(tmp_path / "part-2.safetensors"))
    result = model_digest(tmp_path, progress=False, use_cache=False)
    assert [(t.name, t.dtype, t.shape, t.n_bytes) for t in result.tensors] == [
        ("e", "F32", (0, 4), 0), ("v", "I64", (2,), 16), ("w", "BF16", (2, 3), 12)]
    assert result.tensors[0].digest == poseidon_hash(tensor_header_elements("e", "F32", (0, 4), 0))
    assert len(result.files) == 2

    save_torch({"w": torch.ones(1)}, str(tmp_path / "part-3.safetensors"))
    with pytest.raises(ValueError, match="appears in both"):
        model_digest(tmp_path, progress=False, use_cache=False)


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
    with pytest.raises(ValueError, match="workers"):
        write({}, b"")
        model_digest(tmp_path, progress=False, use_cache=False, workers=0)
