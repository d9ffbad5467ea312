"""The formulas, on golden figures: vLLM's KV cache, GPUStack's documented rule, SGLang's default fraction,
MLA, sliding windows and MoE, and the verdicts and choices built on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_gpustack.estimate.engine import engine_settings
from nomad_gpustack.estimate.facts import ModelFacts, from_config
from nomad_gpustack.estimate.local import read_local_model
from nomad_gpustack.estimate.memory import (
    VLLM_BATCHED_TOKENS,
    figures_for,
    gpustack_claim,
    kv_for_length,
    kv_per_token,
    llamacpp_kv,
    sglang_mem_fraction,
    vllm_activation,
)
from nomad_gpustack.estimate.plan import GpuSize, NoFit, check, choose, estimate, gpu_counts
from nomad_gpustack.sizes import GIB, MIB
from tests.support.model_fixtures import (
    DEEPSEEK_V3,
    DEEPSEEK_V3_BYTES,
    GEMMA_3_27B,
    GEMMA_3_27B_BYTES,
    LLAMA_31_8B,
    LLAMA_31_8B_BYTES,
    LLAMA_31_70B,
    LLAMA_31_70B_BYTES,
    MIXTRAL_8X7B,
    MIXTRAL_8X7B_BYTES,
    llama_gguf,
)

LLAMA_8B = from_config(LLAMA_31_8B, LLAMA_31_8B_BYTES, "Llama-3.1-8B")
LLAMA_70B = from_config(LLAMA_31_70B, LLAMA_31_70B_BYTES, "Llama-3.1-70B")


def vllm(*parameters: str) -> object:
    return engine_settings("vLLM", list(parameters))


# --- KV cache ------------------------------------------------------------------------------------------


def test_llama_31_8b_bf16_takes_128_kib_of_kv_per_token() -> None:
    assert kv_per_token(LLAMA_8B, tp=1) == 131_072
    assert kv_for_length(LLAMA_8B, 1, 8192) == GIB  # 1 GiB per 8192 tokens
    assert kv_for_length(LLAMA_8B, 1, 131_072) == 16 * GIB


def test_the_gguf_of_the_same_model_gives_the_same_kv(tmp_path: Path) -> None:
    facts = read_local_model(llama_gguf(tmp_path / "8b.gguf"))
    assert kv_per_token(facts, tp=1) == 131_072
    assert llamacpp_kv(facts, engine_settings("llama.cpp", []), 8192, list(range(32))) == GIB


def test_kv_heads_split_over_tp_and_are_replicated_beyond_their_count() -> None:
    assert [kv_per_token(LLAMA_8B, tp) for tp in (1, 2, 4, 8, 16)] == [131_072, 65_536, 32_768, 16_384, 16_384]
    assert kv_per_token(LLAMA_8B, tp=1, pp=2) == 65_536  # half the layers on each pipeline stage


def test_fp8_kv_cache_halves_it() -> None:
    assert kv_per_token(LLAMA_8B, 1, setting="fp8") == 65_536
    assert kv_per_token(LLAMA_8B, 1, setting="fp8_e5m2") == 65_536


def test_mla_caches_one_latent_head_on_every_rank() -> None:
    facts = from_config(DEEPSEEK_V3, DEEPSEEK_V3_BYTES, "DeepSeek-V3")
    assert facts.mla_dim == 576
    assert kv_per_token(facts, 1) == 61 * 576 * 2 == kv_per_token(facts, 8)
    assert kv_per_token(facts, 1, setting="fp8_ds_mla") == 61 * 656


def test_sliding_window_layers_are_bounded_by_their_window() -> None:
    facts = from_config(GEMMA_3_27B, GEMMA_3_27B_BYTES, "Gemma-3-27B")
    assert facts.sliding_window == 1024 and facts.multimodal
    assert sum(facts.sliding_layers) == 52  # every 6th of 62 layers is global
    per_layer = 16 * 256 * 2  # 16 KV heads × (128 + 128) × bf16
    kept = (-(-(1024 - 1 + VLLM_BATCHED_TOKENS) // 16) + 1) * 16
    assert kv_for_length(facts, 1, 131_072, block=16) == 10 * per_layer * 131_072 + 52 * per_layer * kept
    assert kv_per_token(facts, 1) == 62 * per_layer  # the rate of a full-attention model of the same shape


def test_qwen2_without_use_sliding_window_has_no_window() -> None:
    config = {**LLAMA_31_8B, "sliding_window": 131072, "use_sliding_window": False}
    assert from_config(config, 1, "q").sliding_window is None


def test_moe_models_get_moe_activation_and_known_architectures_their_own() -> None:
    mixtral = from_config(MIXTRAL_8X7B, MIXTRAL_8X7B_BYTES, "Mixtral")
    assert mixtral.moe and vllm_activation(mixtral) == 8 * GIB
    assert vllm_activation(LLAMA_8B) == int(4.8 * GIB)


# --- GPUStack's rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (988_097_824, 3.1),  # Qwen2.5-0.5B: model.safetensors
        (6_171_877_376, 8.9),  # Qwen2.5-3B: index total_size
        (15_231_233_024, 19.0),  # Qwen2.5-7B
        (145_412_407_296, 164.5),  # Qwen2.5-72B
    ],
)
def test_gpustacks_documented_examples(weights: int, expected: float) -> None:
    assert round(gpustack_claim(weights, llm=True) / GIB, 1) == expected


def test_non_llm_models_get_the_smaller_overhead_and_the_claim_env_overrides() -> None:
    assert gpustack_claim(GIB, llm=False) == int(1.2 * GIB) + 512 * MIB
    s = engine_settings("TEI", [], {"GPUSTACK_MODEL_VRAM_CLAIM": str(10 * GIB)}, ["embedding"])
    assert not s.llm and s.vram_claim == 10 * GIB
    assert figures_for(LLAMA_8B, s, 4096, 2, None).total == 5 * GIB


# --- SGLang ---------------------------------------------------------------------------------------------


def test_sglang_default_fraction_follows_the_gpu_size() -> None:
    # 24 GiB: 512 + 2048 × 1.5 + 24 × 2 + 1/8 × 1024 = 3760 MiB reserved
    assert sglang_mem_fraction(24 * GIB, 1) == round((24576 - 3760) / 24576, 3) == 0.847
    # 80 GiB: 512 + 8192 × 1.5 + 256 × 2 + 128 = 13440 MiB (more than the 10 GiB floor)
    assert sglang_mem_fraction(80 * GIB, 1) == round((81920 - 13440) / 81920, 3)
    assert sglang_mem_fraction(None, 1) == 0.88


def test_sglang_starts_when_the_pool_is_not_empty_and_warns_below_one_sequence() -> None:
    est = estimate(LLAMA_8B, engine_settings("SGLang", []), GpuSize(24 * GIB, "nomad.gpu_memory"))
    verdict = check(est, 1)
    assert verdict.refusal is None
    assert any("fewer than one full-length sequence" in w for w in verdict.warnings)
    tiny = estimate(LLAMA_70B, engine_settings("SGLang", []), GpuSize(24 * GIB, "nomad.gpu_memory"))
    assert check(tiny, 1).refusal is not None


# --- vLLM: the refusal, the warnings, the choice -----------------------------------------------------


def test_vllm_refuses_what_vllm_would_refuse_and_says_what_to_change() -> None:
    est = estimate(
        LLAMA_8B, engine_settings("vLLM", ["--max-model-len", "32768"]), GpuSize(24 * GIB, "nomad.gpu_memory")
    )
    verdict = check(est, 1)
    assert verdict.refusal is not None
    assert verdict.refusal.startswith("vLLM needs 23.9 GiB per GPU at --max-model-len 32768 (weights 15.0, KV 4.0, ")
    assert "1 × 24 GiB at 0.90 gives 21.6: use gpus: 2, or --max-model-len ≤ 13312" in verdict.refusal
    # what it suggests does start
    shorter = estimate(LLAMA_8B, engine_settings("vLLM", ["--max-model-len=13312"]), est.gpu)
    assert check(shorter, 1).refusal is None
    assert check(est, 2).refusal is None and check(est, 2).row.sequences == 4


def test_a_tensor_parallel_size_that_does_not_divide_the_heads_is_refused() -> None:
    facts = from_config({**LLAMA_31_8B, "num_attention_heads": 28, "num_key_value_heads": 4}, LLAMA_31_8B_BYTES, "q")
    est = estimate(facts, engine_settings("vLLM", ["--max-model-len", "4096"]), GpuSize(80 * GIB, "x"))
    assert gpu_counts(facts, est.settings) == (1, 2, 4)
    verdict = check(est, 8)  # vLLM refuses it: the verdict says so, and the row agrees
    assert verdict.refusal == (
        "tensor-parallel size 8 does not divide the model's 28 attention heads; vLLM refuses to start "
        "(use gpus: 2 or 4)"
    )
    assert verdict.row.starts is False and verdict.row.fits is False


def test_auto_takes_the_fewest_gpus_that_start_and_the_memory_they_need() -> None:
    est = estimate(LLAMA_70B, engine_settings("vLLM", ["--max-model-len", "32768"]), GpuSize(80 * GIB, "x"))
    chosen = choose(est, None, auto_gpus=True, auto_memory=False)
    assert chosen.gpus == 4 and chosen.gpu_memory is None
    assert check(est, 2).refusal is not None and check(est, 4).refusal is None
    by_count = choose(estimate(LLAMA_70B, est.settings), 4, auto_gpus=False, auto_memory=True)
    assert by_count.gpus == 4 and by_count.gpu_memory is not None
    assert by_count.gpu_memory % GIB == 0 and by_count.gpu_memory >= by_count.row.min_gpu_memory
    with pytest.raises(NoFit, match="does not fit on up to 8 GPUs of 24 GiB"):
        choose(estimate(LLAMA_70B, est.settings, GpuSize(24 * GIB, "x")), None, auto_gpus=True, auto_memory=False)
    with pytest.raises(NoFit, match="needs the GPUs' memory"):
        choose(estimate(LLAMA_70B, est.settings), None, auto_gpus=True, auto_memory=False)


def test_a_context_longer_than_the_models_is_warned() -> None:
    est = estimate(LLAMA_8B, engine_settings("vLLM", ["--max-model-len", "200000"]))
    assert any("longer than the model's maximum (131072)" in w for w in est.warnings)


def test_a_context_vllm_refuses_is_refused_by_the_verdict_the_table_and_auto_alike() -> None:
    short = from_config({**LLAMA_31_8B, "max_position_embeddings": 8192}, LLAMA_31_8B_BYTES, "x")
    settings = engine_settings("vLLM", ["--max-model-len", "16384"])
    est = estimate(short, settings, GpuSize(80 * GIB, "nomad.gpu_memory"))
    reason = (
        "--max-model-len 16384 is longer than the model's maximum (8192): vLLM refuses it unless "
        "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 (use --max-model-len ≤ 8192)"
    )
    assert reason in est.warnings
    assert check(est, 1).refusal == reason and check(est, 1).row.starts is False
    assert [r.fits for r in est.rows] == [False] * len(est.rows), "the table agrees with the verdict"
    assert est.suggestion() == {"gpus": None, "gpu_memory": None, "reason": reason}
    for auto_gpus, auto_memory in ((True, False), (False, True), (True, True)):
        with pytest.raises(NoFit, match="longer than the model's maximum"):
            choose(est, 1, auto_gpus=auto_gpus, auto_memory=auto_memory)
    # With vLLM's switch set, vLLM starts: no refusal, the warning says what the switch risks.
    allowed = engine_settings("vLLM", ["--max-model-len", "16384"], {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"})
    let = estimate(short, allowed, GpuSize(80 * GIB, "nomad.gpu_memory"))
    assert check(let, 1).refusal is None and let.rows[0].fits is True
    assert any("may give wrong outputs past the maximum" in w for w in let.warnings)


# --- engine settings ----------------------------------------------------------------------------------


def test_settings_read_both_flag_forms_and_keep_the_last() -> None:
    s = engine_settings("vLLM", ["--max-model-len=4096", "--gpu-memory-utilization", "0.8", "--max-model-len", "8192"])
    assert (s.engine, s.context, s.gpu_memory_utilization) == ("vllm", 8192, 0.8)
    ll = engine_settings("llama.cpp", ["-c", "2048", "-fa", "-ngl", "-1", "--cache-type-k", "q8_0"])
    assert (ll.context, ll.flash_attention, ll.gpu_layers, ll.cache_type_k) == (2048, True, -1, "q8_0")
    assert engine_settings("llama.cpp", ["--flash-attn", "off"]).flash_attention is False
    bad = engine_settings("SGLang", ["--context-length", "lots"])
    assert bad.context is None and bad.problems == ("--context-length lots is not a number",)
    assert engine_settings("Text-Embeddings-Inference", []).engine == "other"
    assert engine_settings("vLLM", ["--max-model-len", "32K"]).context == 32768
    assert engine_settings("vLLM", ["--max-model-len=25.6k"]).context == 25600


def test_a_facts_document_keeps_what_the_table_shows() -> None:
    doc = ModelFacts.to_json(LLAMA_8B)
    assert doc["kv_heads"] == 8 and doc["head_dim"] == 128 and doc["weight_bytes"] == LLAMA_31_8B_BYTES


# --- GGUF headers of MoE, MLA and sliding-window models (llama.cpp's rule) ---------------------------


def test_a_mixtral_gguf_is_moe_with_its_experts_weights(tmp_path: Path) -> None:
    facts = read_local_model(llama_gguf(tmp_path / "mixtral.gguf", vocab=32000, context=32768, experts=8))
    assert facts.moe and facts.experts == 8 and vllm_activation(facts) == 8 * GIB
    assert 20 * GIB < facts.weight_bytes < 30 * GIB  # 46.7B parameters at Q4_K / Q6_K
    est = estimate(facts, engine_settings("llama.cpp", ["-c", "32768"]), GpuSize(24 * GIB, "x"))
    assert [r.gpus for r in est.rows] == [1, 2, 4, 8] and est.smallest_fit() is not None
    assert est.rows[0].kv_context == 4 * GIB  # 32 layers × 8 KV heads × 128 × 2 × f16 × 32768


def gguf_model(path: Path, arch: str, meta: dict[str, object], layers: int, embd: int) -> ModelFacts:
    from gguf import GGMLQuantizationType as Q

    from tests.support.model_fixtures import write_gguf

    tensors = [("token_embd.weight", [embd, 1024], Q.Q8_0), ("output_norm.weight", [embd], Q.F32)]
    for i in range(layers):
        tensors += [(f"blk.{i}.attn_norm.weight", [embd], Q.F32), (f"blk.{i}.ffn_up.weight", [embd, 4 * embd], Q.Q8_0)]
    base = {f"{arch}.block_count": layers, f"{arch}.embedding_length": embd, f"{arch}.context_length": 131072,
            f"{arch}.vocab_size": 1024}  # fmt: skip
    return read_local_model(write_gguf(path, arch, {**base, **{f"{arch}.{k}": v for k, v in meta.items()}}, tensors))


def test_a_gemma3_gguf_bounds_its_sliding_layers_as_llama_cpp_does(tmp_path: Path) -> None:
    meta = {"attention.head_count": 32, "attention.head_count_kv": 16, "attention.key_length": 128,
            "attention.value_length": 128, "attention.sliding_window": 1024}  # fmt: skip
    facts = gguf_model(tmp_path / "gemma3.gguf", "gemma3", meta, 12, 512)
    assert facts.sliding_window == 1024 and facts.sliding_layers == (True,) * 5 + (False,) + (True,) * 5 + (False,)
    per_cell = 16 * 128 * 2 * 2  # K and V, f16
    window = 1024 + 2048  # window × 1 sequence + batch, padded to 256
    settings = engine_settings("llama.cpp", ["-c", "32768"])
    assert llamacpp_kv(facts, settings, 32768, list(range(12))) == per_cell * (2 * 32768 + 10 * window)


def test_a_deepseek2_gguf_caches_the_latent_as_llama_cpp_allocates_it(tmp_path: Path) -> None:
    meta = {"attention.head_count": 128, "attention.head_count_kv": 1, "attention.key_length": 576,
            "attention.value_length": 512, "attention.kv_lora_rank": 512, "rope.dimension_count": 64}  # fmt: skip
    facts = gguf_model(tmp_path / "deepseek.gguf", "deepseek2", meta, 4, 512)
    assert facts.mla_dim == 576 and facts.kv_heads == (1,) * 4
    settings = engine_settings("llama.cpp", ["-c", "4096"])
    assert llamacpp_kv(facts, settings, 4096, list(range(4))) == 4 * (576 + 512) * 2 * 4096
    assert kv_per_token(facts, 8) == 4 * 576 * 2  # vLLM: one latent head on every rank
