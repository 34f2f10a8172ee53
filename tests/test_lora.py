"""llmsforme.lora against peft, on the course model.

A peft adapter's A and B copied into LoRALinear give the same outputs (and
back); the merges are equal; add_lora trains exactly the parameters that
peft trains. Bad arguments are refused with clear errors.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from llmsforme.lora import LoRALinear, add_lora, merge_lora, trainable_parameters

peft = pytest.importorskip("peft")  # in the 'course' extra that make installs: never skipped there

TARGETS = ["q_proj", "v_proj"]


@pytest.fixture(scope="module")
def peft_model(course_model):
    model, _ = course_model
    config = peft.LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0)
    wrapped = peft.get_peft_model(copy.deepcopy(model), config)
    with torch.no_grad():  # a trained-looking adapter: B no longer zero
        generator = torch.Generator().manual_seed(0)
        for name, parameter in wrapped.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return wrapped


def _peft_layer(peft_model, index=3, projection="q_proj"):
    return getattr(peft_model.base_model.model.model.layers[index].self_attn, projection)


def _ours_from_peft(layer) -> LoRALinear:
    ours = LoRALinear(copy.deepcopy(layer.base_layer), r=layer.r["default"], alpha=layer.lora_alpha["default"])
    with torch.no_grad():
        ours.lora_A.weight.copy_(layer.lora_A["default"].weight)
        ours.lora_B.weight.copy_(layer.lora_B["default"].weight)
    return ours


def test_a_peft_adapter_in_our_layer_gives_the_same_outputs(peft_model):
    layer = _peft_layer(peft_model)
    ours = _ours_from_peft(layer)
    assert ours.scaling == layer.scaling["default"] == 2.0
    x = torch.randn(4, 7, 576, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(ours(x), layer(x), atol=1e-6, rtol=0)
        assert not torch.allclose(ours(x), ours.base(x), atol=1e-4)  # the adapter does something


def test_our_adapter_in_peft_gives_the_same_outputs(peft_model):
    layer = copy.deepcopy(_peft_layer(peft_model, 5, "v_proj"))
    ours = LoRALinear(copy.deepcopy(layer.base_layer), r=8, alpha=16)
    with torch.no_grad():
        ours.lora_B.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(2))
        layer.lora_A["default"].weight.copy_(ours.lora_A.weight)
        layer.lora_B["default"].weight.copy_(ours.lora_B.weight)
        x = torch.randn(3, 576, generator=torch.Generator().manual_seed(3))
        assert torch.allclose(ours(x), layer(x), atol=1e-6, rtol=0)


def test_merges_are_equal(peft_model):
    layer = copy.deepcopy(_peft_layer(peft_model))
    ours = _ours_from_peft(layer)
    merged = ours.merged()
    assert isinstance(merged, nn.Linear) and not isinstance(merged, LoRALinear)
    layer.merge()
    assert torch.allclose(merged.weight, layer.base_layer.weight, atol=1e-6, rtol=0)
    x = torch.randn(2, 576, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(merged(x), ours(x), atol=1e-5, rtol=1e-5)  # outputs ~10: float32 rounding


def test_trainable_parameter_counts_equal_peft_on_the_course_model(course_model, peft_model):
    ours = add_lora(copy.deepcopy(course_model[0]), r=8, alpha=16, target_modules=TARGETS)
    theirs = peft_model.get_nb_trainable_parameters()
    assert trainable_parameters(ours) == theirs
    # 30 layers x (q: 8 x (576 + 576) + v: 8 x (576 + 192))
    assert theirs[0] == 30 * (8 * (576 + 576) + 8 * (576 + 192)) == 460_800


def test_a_fresh_adapter_leaves_the_model_unchanged_and_merges_back(course_model):
    model, tokenizer = course_model
    ids = tokenizer("The rain in Spain", return_tensors="pt").input_ids
    adapted = add_lora(copy.deepcopy(model), r=4, alpha=8, target_modules=["q_proj", "k_proj", "down_proj"])
    with torch.no_grad():
        before = model(ids).logits
        assert torch.equal(adapted(ids).logits, before)  # B = 0
        for module in adapted.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.weight.normal_(0, 0.01, generator=torch.Generator().manual_seed(5))
        unmerged = adapted(ids).logits
        merged = merge_lora(adapted)(ids).logits
    assert not any(isinstance(m, LoRALinear) for m in adapted.modules())
    assert torch.allclose(merged, unmerged, atol=1e-4, rtol=0)
    assert not torch.allclose(merged, before, atol=1e-3)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: LoRALinear(nn.Conv1d(3, 3, 1), 1, 1), TypeError, "torch.nn.Linear"),
        (lambda: LoRALinear(nn.Linear(6, 4), 0, 1), ValueError, "r must be an int from 1 to"),
        (lambda: LoRALinear(nn.Linear(6, 4), 5, 1), ValueError, r"min\(in, out\) = 4"),
        (lambda: LoRALinear(nn.Linear(6, 4), 2.0, 1), ValueError, "r must be an int"),
        (lambda: LoRALinear(nn.Linear(6, 4), 2, 0), ValueError, "alpha must be a finite number > 0"),
        (lambda: LoRALinear(nn.Linear(6, 4), 2, float("inf")), ValueError, "alpha"),
        (lambda: add_lora("model", 2, 2, ["q_proj"]), TypeError, "torch.nn.Module"),
        (lambda: add_lora(nn.Sequential(nn.Linear(4, 4)), 2, 2, "0"), TypeError, "list of module names"),
        (lambda: add_lora(nn.Sequential(nn.Linear(4, 4)), 2, 2, []), ValueError, "at least one"),
        (lambda: add_lora(nn.Sequential(nn.Linear(4, 4)), 2, 2, ["q_prj"]), ValueError, r"no nn.Linear named \['q_prj'\]"),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_package_decodes_through_a_peft_model(course_model, peft_model):
    """greedy and chat drive a PeftModel (its forward passes the cache on): same tokens as merged."""
    from llmsforme import greedy

    model, tokenizer = course_model
    through_peft = greedy(peft_model, "The rain in Spain", tokenizer=tokenizer, max_new_tokens=8, eos_token_id=[])
    merged = copy.deepcopy(peft_model).merge_and_unload()
    assert through_peft.token_ids == greedy(merged, "The rain in Spain", tokenizer=tokenizer,
                                            max_new_tokens=8, eos_token_id=[]).token_ids
