"""`zkref mock --base DIR --adapter DIR`: a peft adapter's modules proven with the scaling peft uses."""
import json

import pytest

from zkref.cli.main import main
from zkref.models.tiny_model import build_tiny_gpt2, save_random_lora


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("adapter")
    base = build_tiny_gpt2(tmp / "base", n_layer=1, n_embd=32, n_head=2, vocab_size=64)
    adapter = save_random_lora(base, tmp / "rslora", r=4, lora_alpha=8, use_rslora=True,
                               target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, rank_pattern={"c_fc": 2})
    return base, adapter


def test_every_module_is_proven_with_peft_scaling_and_written_out(model_dirs, tmp_path, capsys):
    base, adapter = model_dirs
    out = tmp_path / "proved.json"
    assert main(["mock", "--base", str(base), "--adapter", str(adapter), "--prompt-ids", "1,5,9,33",
                 "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == json.loads(out.read_text())
    by_name = {m["module"]: m for m in doc["modules"]}
    attn, fc = by_name["transformer.h.0.attn.c_attn"], by_name["transformer.h.0.mlp.c_fc"]
    assert attn["scaling"] == pytest.approx(8 / 4 ** 0.5) and fc["scaling"] == pytest.approx(8 / 2 ** 0.5)
    assert attn["statement"]["rank"] == 4 and fc["statement"]["rank"] == 2 and attn["statement"]["tokens"] == 4
    for m in doc["modules"]:
        assert m["satisfied"] and m["within_bound"] and m["relative_error_vs_peft"] < 0.3
        assert len(m["delta"]) == 4


def test_one_module_and_bad_input(model_dirs, capsys):
    base, adapter = model_dirs
    assert main(["mock", "--base", str(base), "--adapter", str(adapter), "--module", "transformer.h.0.mlp.c_fc",
                 "--weight-bits", "8", "--json"]) == 0
    (only,) = json.loads(capsys.readouterr().out)["modules"]
    assert only["weight_bits"] == 8 and only["relative_error_vs_peft"] < 0.05
    assert main(["mock", "--base", str(base), "--adapter", str(adapter), "--module", "nope"]) == 2
    assert main(["mock", "--adapter", str(adapter)]) == 2
    assert main(["mock", "--base", str(base), "--adapter", str(base)]) == 2  # no adapter_config.json
    assert main(["mock", "--base", str(base), "--adapter", str(adapter), "--prompt-ids", "1,x"]) == 2
