"""peft adapters loaded through peft itself (zkref.models.peft_loading): every module's delta is scaling · x·Aᵀ·Bᵀ.

Models and adapters are built here (random weights, save_pretrained, loaded back through transformers + peft): a tiny
GPT-2 (Conv1D with fan_in_fan_out) and a tiny Llama (nn.Linear q/v/MLP projections), rsLoRA with rank_pattern and
alpha_pattern, two adapters in one model, and the refusals.
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from zkref.models.peft_loading import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, MAX_JSON_BYTES, LoRAModule,  # noqa: E402
                                       capture_module_io, load_peft_model, lora_modules)
from zkref.models.tiny_model import (TINY_GPT2, TINY_LLAMA, build_tiny_gpt2, build_tiny_llama,  # noqa: E402
                                     save_random_lora)

GPT2_TARGETS = ["c_attn", "c_fc"]
LLAMA_TARGETS = ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
RS_CONFIG = dict(r=8, lora_alpha=16, use_rslora=True, target_modules=LLAMA_TARGETS, lora_dropout=0.1,
                 rank_pattern={"v_proj": 2, "layers.1.mlp.down_proj": 5},
                 alpha_pattern={"layers.1.self_attn.q_proj": 3})
TOKENS = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Base models and adapter directories, each written by save_pretrained (no hub)."""
    root = tmp_path_factory.mktemp("peft")
    gpt2 = build_tiny_gpt2(root / "gpt2")
    llama = build_tiny_llama(root / "llama")
    return {
        "root": root, "gpt2": gpt2, "llama": llama,
        "gpt2_adapter": save_random_lora(gpt2, root / "gpt2-lora", seed=1, r=4, lora_alpha=8,
                                         target_modules=GPT2_TARGETS, fan_in_fan_out=True),
        "rs_adapter": save_random_lora(llama, root / "llama-rslora", seed=2, **RS_CONFIG),
        "plain_adapter": save_random_lora(llama, root / "llama-lora", seed=3, r=4, lora_alpha=4,
                                          target_modules=["q_proj", "v_proj"]),
    }


@pytest.fixture(scope="module")
def gpt2_loaded(models):
    return load_peft_model(models["gpt2"], models["gpt2_adapter"], dtype=torch.float64)


@pytest.fixture(scope="module")
def llama_two(models):
    return load_peft_model(models["llama"], {"rs": models["rs_adapter"], "plain": models["plain_adapter"]},
                           dtype=torch.float64)


def _assert_every_delta_is_scaling_x_At_Bt(peft_model, adapter, tokens=TOKENS) -> None:
    captured = capture_module_io(peft_model, tokens, adapter=adapter.name)
    assert set(captured) == set(adapter.module_names)
    for m in adapter.modules:
        c = captured[m.name]
        assert c.x.shape == (len(tokens), m.d_in) and c.delta.shape == (len(tokens), m.d_out)
        expected = m.scaling * c.x @ m.lora_A.T @ m.lora_B.T
        np.testing.assert_allclose(c.delta, expected, rtol=0, atol=1e-12, err_msg=m.name)
        assert np.abs(c.delta).max() > 1e-3, m.name  # the adapter really changes this module's output


def test_gpt2_conv1d_every_module_delta_equals_scaling_x_At_Bt(gpt2_loaded):
    peft_model, adapters = gpt2_loaded
    (adapter,) = adapters.values()
    names = [f"transformer.h.{i}.{part}" for i in range(TINY_GPT2["n_layer"]) for part in ("attn.c_attn", "mlp.c_fc")]
    assert adapter.module_names == tuple(names)  # model order, base-model paths
    d = TINY_GPT2["n_embd"]
    for m in adapter.modules:
        assert (m.base_layer, m.fan_in_fan_out, m.rank, m.scaling) == ("Conv1D", True, 4, 8 / 4)
        assert m.lora_A.shape == (4, d) and m.lora_B.shape == ((3 * d if "c_attn" in m.name else 4 * d), 4)
    _assert_every_delta_is_scaling_x_At_Bt(peft_model, adapter)


def test_gpt2_conv1d_fan_in_fan_out_only_transposes_the_merged_weight(gpt2_loaded):
    """Conv1D stores W as d_in × d_out; peft's delta weight for merging is (s·B·A)ᵀ in that layout, same function."""
    peft_model, adapters = gpt2_loaded
    m = adapters["default"].modules[0]
    module = peft_model.get_submodule("base_model.model." + m.name)
    assert tuple(module.get_base_layer().weight.shape) == (m.d_in, m.d_out)
    merged = module.get_delta_weight("default").numpy()
    np.testing.assert_allclose(merged, m.scaling * (m.lora_B @ m.lora_A).T, atol=1e-14)
    x = np.random.default_rng(0).standard_normal((3, m.d_in))
    np.testing.assert_allclose(x @ merged, m.delta(x), atol=1e-12)


def test_llama_rslora_rank_and_alpha_patterns_every_module_delta_equals_scaling_x_At_Bt(llama_two):
    peft_model, adapters = llama_two
    rs = adapters["rs"]
    assert rs.use_rslora and len(rs.modules) == TINY_LLAMA["num_hidden_layers"] * len(LLAMA_TARGETS)
    assert all(m.base_layer == "Linear" and not m.fan_in_fan_out for m in rs.modules)
    _assert_every_delta_is_scaling_x_At_Bt(peft_model, rs)


def _expected_rank_alpha(name: str) -> tuple[int, float]:
    rank = 2 if name.endswith("v_proj") else 5 if name.endswith("layers.1.mlp.down_proj") else 8
    alpha = 3.0 if name.endswith("layers.1.self_attn.q_proj") else 16.0
    return rank, alpha


def test_rslora_scaling_is_alpha_over_sqrt_r_not_alpha_over_r(llama_two):
    """Fails if anyone computes alpha/r for an rsLoRA adapter: the scale and the deltas would both be wrong."""
    peft_model, adapters = llama_two
    captured = capture_module_io(peft_model, TOKENS, adapter="rs")
    ranks = set()
    for m in adapters["rs"].modules:
        rank, alpha = _expected_rank_alpha(m.name)
        ranks.add(rank)
        assert (m.rank, m.lora_alpha, m.use_rslora) == (rank, alpha, True), m.name
        assert m.scaling == pytest.approx(alpha / math.sqrt(rank), rel=1e-15)
        assert abs(m.scaling - alpha / rank) > 0.1 * m.scaling  # r ≥ 2: the two conventions differ
        c = captured[m.name]
        wrong = (alpha / rank) * c.x @ m.lora_A.T @ m.lora_B.T
        assert np.abs(wrong - c.delta).max() > 1e-3, m.name  # peft's output refutes alpha/r
    assert ranks == {2, 5, 8}  # rank_pattern gave different ranks per module


def test_two_adapters_each_captured_alone(llama_two):
    peft_model, adapters = llama_two
    plain = adapters["plain"]
    assert plain.module_names == tuple(f"model.layers.{i}.self_attn.{p}"
                                       for i in range(2) for p in ("q_proj", "v_proj"))
    assert all((m.rank, m.scaling, m.use_rslora) == (4, 1.0, False) for m in plain.modules)
    _assert_every_delta_is_scaling_x_At_Bt(peft_model, plain)
    assert peft_model.active_adapters == ["rs"]  # the first adapter stays active after capturing another
    assert [m.name for m in lora_modules(peft_model)] == list(adapters["rs"].module_names)
    assert [m.name for m in lora_modules(peft_model, adapter="plain")] == list(plain.module_names)
    q_rs = capture_module_io(peft_model, TOKENS, ["model.layers.0.self_attn.q_proj"], adapter="rs")
    q_plain = capture_module_io(peft_model, TOKENS, ["model.layers.0.self_attn.q_proj"], adapter="plain")
    name = "model.layers.0.self_attn.q_proj"
    np.testing.assert_array_equal(q_rs[name].x, q_plain[name].x)  # layer 0's input does not depend on the adapter
    assert np.abs(q_rs[name].delta - q_plain[name].delta).max() > 1e-3
    with pytest.raises(ValueError, match="no adapter 'other'"):
        lora_modules(peft_model, adapter="other")
    with pytest.raises(ValueError, match="no LoRA module"):
        capture_module_io(peft_model, TOKENS, ["model.layers.0.mlp.up_proj"], adapter="plain")


@settings(max_examples=15)
@given(tokens=st.lists(st.integers(0, TINY_LLAMA["vocab_size"] - 1), min_size=1, max_size=24))
def test_delta_matches_on_any_token_sequence(llama_two, tokens):
    peft_model, adapters = llama_two
    m = adapters["rs"].modules[-1]
    c = capture_module_io(peft_model, tokens, [m.name], adapter="rs")[m.name]
    np.testing.assert_allclose(c.delta, m.delta(c.x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.base_out + c.delta, c.base_out + m.delta(c.x), atol=1e-12)


@settings(max_examples=6, deadline=None)
@given(r=st.integers(1, 6), alpha=st.sampled_from([1, 3, 8, 32]), rslora=st.booleans())
def test_scaling_follows_peft_for_any_rank_and_alpha(models, tmp_path_factory, r, alpha, rslora):
    d = save_random_lora(models["gpt2"], tmp_path_factory.mktemp("a"), seed=r, r=r, lora_alpha=alpha,
                         use_rslora=rslora, target_modules=["c_attn"], fan_in_fan_out=True)
    peft_model, adapters = load_peft_model(models["gpt2"], d, dtype=torch.float64)
    for m in adapters["default"].modules:
        assert m.scaling == pytest.approx(alpha / (math.sqrt(r) if rslora else r), rel=1e-15)
    _assert_every_delta_is_scaling_x_At_Bt(peft_model, adapters["default"], tokens=[7, 8, 9])


def test_float32_load_is_close(models):
    peft_model, adapters = load_peft_model(models["gpt2"], models["gpt2_adapter"])  # default dtype: float32
    m = adapters["default"].modules[0]
    c = capture_module_io(peft_model, TOKENS, [m.name])[m.name]
    np.testing.assert_allclose(c.delta, m.delta(c.x), atol=1e-5)


def test_lora_module_is_frozen_and_checked():
    A, B = np.ones((2, 3)), np.ones((4, 2))
    m = LoRAModule(name="m", adapter="a", lora_A=A, lora_B=B, scaling=0.5, lora_alpha=1.0, rank=2, d_in=3, d_out=4,
                   use_rslora=False, fan_in_fan_out=False, base_layer="Linear")
    A[0, 0] = 7.0  # the module holds its own copy
    assert m.lora_A[0, 0] == 1.0 and not m.lora_A.flags.writeable
    with pytest.raises(ValueError):
        m.lora_A[0, 0] = 2.0
    np.testing.assert_array_equal(m.delta(np.ones((1, 3))), [[0.5 * 3 * 2] * 4])  # s · (1·Aᵀ=3s) · Bᵀ
    with pytest.raises(ValueError, match="do not match"):
        LoRAModule(name="m", adapter="a", lora_A=np.ones((2, 3)), lora_B=np.ones((4, 3)), scaling=1.0,
                   lora_alpha=1.0, rank=2, d_in=3, d_out=4, use_rslora=False, fan_in_fan_out=False,
                   base_layer="Linear")
    with pytest.raises(ValueError, match="features"):
        m.delta(np.ones((1, 5)))


# ----------------------------------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------------------------------

def _copy_adapter(models, tmp_path, which="gpt2_adapter"):
    dst = tmp_path / "adapter"
    shutil.copytree(models[which], dst)
    return dst


def _edit_config(adapter_dir, **changes):
    path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_refuses_missing_directory_and_missing_config(models, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_peft_model(models["gpt2"], tmp_path / "absent")
    with pytest.raises(ValueError, match="base model directory .* does not exist"):
        load_peft_model(tmp_path / "no-base", models["gpt2_adapter"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no adapter_config.json"):
        load_peft_model(models["gpt2"], empty)
    (empty / ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ValueError, match=f"no {ADAPTER_WEIGHTS}"):
        load_peft_model(models["gpt2"], empty)


def test_refuses_pickled_adapter_without_unpickling(models, tmp_path, monkeypatch):
    """A .bin-only adapter (save_pretrained(safe_serialization=False)) is refused before anything reads it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    model = AutoModelForCausalLM.from_pretrained(models["gpt2"], local_files_only=True)
    get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)).save_pretrained(
        tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "adapter_model.bin").exists() and not (tmp_path / "bin" / ADAPTER_WEIGHTS).exists()
    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(ValueError, match="pickled adapter weights .*never unpickles"):
        load_peft_model(models["gpt2"], tmp_path / "bin")


def test_refuses_dora(models, tmp_path):
    d = save_random_lora(models["llama"], tmp_path / "dora", r=4, lora_alpha=8, target_modules=["q_proj"],
                         use_dora=True)
    with pytest.raises(ValueError, match="DoRA.*learned magnitude"):
        load_peft_model(models["llama"], d)


def test_refuses_embedding_lora(models, tmp_path):
    d = save_random_lora(models["gpt2"], tmp_path / "emb", r=2, target_modules=["wte"])
    with pytest.raises(ValueError, match="lora.Embedding layer, refused: embedding LoRA is a table lookup"):
        load_peft_model(models["gpt2"], d)


def test_refuses_lora_bias(models, tmp_path):
    d = save_random_lora(models["llama"], tmp_path / "lb", r=2, target_modules=["q_proj"], lora_bias=True)
    with pytest.raises(ValueError, match="lora_bias=True"):
        load_peft_model(models["llama"], d)


@pytest.mark.parametrize("changes, message", [
    ({"bias": "lora_only"}, "bias='lora_only' trains the base layers' biases"),
    ({"bias": "all"}, "bias='all'"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save.*whole modules"),
    ({"layer_replication": [[0, 2], [1, 2]]}, "layer_replication"),
    ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa' is refused"),
    ({"init_lora_weights": "loftq"}, "init_lora_weights='loftq' is refused"),
    ({"peft_type": "IA3"}, "only plain LoRA"),
    ({"use_future_lora_variant": True}, "sets \\['use_future_lora_variant'\\], unknown to this peft version"),
])
def test_refuses_adapters_that_change_the_base_model(models, tmp_path, changes, message):
    d = _copy_adapter(models, tmp_path)
    _edit_config(d, **changes)
    with pytest.raises(ValueError, match=message):
        load_peft_model(models["gpt2"], d)


def test_refuses_adapter_for_another_base_model(models, tmp_path):
    with pytest.raises(ValueError, match="saved from a GPT2LMHeadModel.*loads as a LlamaForCausalLM"):
        load_peft_model(models["llama"], models["gpt2_adapter"])  # peft recorded the class it was saved from
    d = _copy_adapter(models, tmp_path)
    _edit_config(d, auto_mapping=None)  # as with task_type="CAUSAL_LM": no class recorded, peft finds no target
    with pytest.raises(ValueError, match="does not load onto the base model.*c_attn"):
        load_peft_model(models["llama"], d)
    shutil.rmtree(d)
    wider = build_tiny_gpt2(tmp_path / "wider", n_embd=32, n_head=4)
    with pytest.raises(ValueError, match="does not load onto the base model"):
        load_peft_model(wider, models["gpt2_adapter"])  # same names, other shapes
    d = _copy_adapter(models, tmp_path)
    _edit_config(d, auto_mapping={"base_model_class": "LlamaForCausalLM", "parent_library": "x"})
    with pytest.raises(ValueError, match="saved from a LlamaForCausalLM.*GPT2LMHeadModel"):
        load_peft_model(models["gpt2"], d)


def test_unknown_config_keys_that_are_off_are_ignored(models, tmp_path):
    d = _copy_adapter(models, tmp_path)
    _edit_config(d, use_future_lora_variant=None, another_future_option=False)
    _, adapters = load_peft_model(models["gpt2"], d)
    assert len(adapters["default"].modules) == 2 * len(GPT2_TARGETS)


def test_refuses_adapter_file_with_tensors_the_model_does_not_use(models, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy_adapter(models, tmp_path)
    tensors = load_file(str(d / ADAPTER_WEIGHTS))
    tensors["base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight"] = torch.zeros(4, 256)
    save_file(tensors, str(d / ADAPTER_WEIGHTS))
    with pytest.raises(ValueError, match="tensors with no place in the model"):
        load_peft_model(models["gpt2"], d)
    tensors = load_file(str(models["gpt2_adapter"] / ADAPTER_WEIGHTS))
    del tensors[sorted(tensors)[0]]
    save_file(tensors, str(d / ADAPTER_WEIGHTS))
    with pytest.raises(ValueError, match="LoRA parameters missing from the file"):
        load_peft_model(models["gpt2"], d)


def test_bounded_reads_and_bad_arguments(models, tmp_path):
    d = _copy_adapter(models, tmp_path)
    (d / ADAPTER_CONFIG).write_bytes(b" " * (MAX_JSON_BYTES + 1))
    with pytest.raises(ValueError, match="exceeds"):
        load_peft_model(models["gpt2"], d)
    (d / ADAPTER_CONFIG).write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        load_peft_model(models["gpt2"], d)
    with pytest.raises(ValueError, match="max_adapter_bytes"):
        load_peft_model(models["gpt2"], models["gpt2_adapter"], max_adapter_bytes=100)
    for name in ("lora", "a", "has space", ""):
        with pytest.raises(ValueError, match="adapter name"):
            load_peft_model(models["gpt2"], {name: models["gpt2_adapter"]})
    (d / ADAPTER_WEIGHTS).write_bytes(b"\xff" * 16)
    (d / ADAPTER_CONFIG).write_text((models["gpt2_adapter"] / ADAPTER_CONFIG).read_text())
    with pytest.raises(ValueError, match="implausible|header"):
        load_peft_model(models["gpt2"], d)


def test_capture_refuses_bad_tokens(gpt2_loaded):
    peft_model, _ = gpt2_loaded
    for bad in ([], [[1, 2], [3, 4]], [TINY_GPT2["vocab_size"]], [-1], [0.5], [10**30], ["a"], [[1], [2, 3]]):
        with pytest.raises(ValueError):
            capture_module_io(peft_model, bad)
    out = capture_module_io(peft_model, torch.tensor([[1, 2, 3]]))  # a (1, T) tensor works too
    assert all(c.x.shape[0] == 3 for c in out.values())
