"""Write a merged Llama-architecture transformers model as a GGUF file, with the ``gguf`` library.

What llama.cpp's ``convert_hf_to_gguf.py`` does for ``LlamaForCausalLM``, in float32 or float16: the hyper-parameters
under ``llama.*``; every tensor renamed through ``gguf.TensorNameMap``; the query and key projections permuted into
llama.cpp's rotary layout (transformers' GGUF loader permutes them back); no ``output.weight`` when the embedding is
tied; and the byte-level BPE tokenizer as ``tokenizer.ggml.*`` (tokens, token types, merges, special ids, chat
template). ``pre`` names llama.cpp's pre-tokenizer; tunewise only knows it for a model that came as a GGUF (it is
copied from there), otherwise the key is left out and llama.cpp uses its default.

Out of scope: quantisation (Q4/Q8: quantise the file with llama.cpp's ``llama-quantize``), other architectures and
SentencePiece tokenizers (refused with one sentence).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ExportError

__all__ = ["write_gguf", "GGUF_DTYPES", "source_pre_tokenizer"]

GGUF_DTYPES = ("f32", "f16")
_ARCHITECTURES = ("LlamaForCausalLM",)


def write_gguf(model: Any, tokenizer: Any, path: Path, *, dtype: str = "f32", name: str = "tunewise",
               pre: str | None = None) -> Path:
    """Write ``model`` (a merged ``LlamaForCausalLM``) and its byte-level BPE ``tokenizer`` to ``path``."""
    import gguf

    config = model.config
    _check_supported(config, tokenizer)
    file_type = gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer = gguf.GGUFWriter(str(path), "llama")
    _write_hyperparameters(writer, config, name, file_type)
    _write_tokenizer(writer, tokenizer, config.vocab_size, pre)
    _write_tensors(writer, model, config, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def source_pre_tokenizer(gguf_path: Path) -> str | None:
    """``tokenizer.ggml.pre`` of an existing GGUF file (the model tunewise dequantised), if it has one."""
    import gguf

    field = gguf.GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.pre")
    return None if field is None else str(field.contents())


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0)


def _check_supported(config: Any, tokenizer: Any) -> None:
    archs = list(getattr(config, "architectures", None) or [])
    if config.model_type != "llama" or (archs and archs[0] not in _ARCHITECTURES):
        raise ExportError(f"GGUF export supports Llama-architecture causal LMs (SmolLM2 is one); this model is "
                            f"{archs[0] if archs else config.model_type}, so export it with --format merged and "
                            "convert that with llama.cpp's convert_hf_to_gguf.py.")
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type != "default" or getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ExportError(f"GGUF export writes plain Llama models; this one has rope type '{rope_type}' or "
                            "attention/MLP biases, so export it with --format merged and convert that with llama.cpp.")
    backend = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else {}
    if (backend.get("model") or {}).get("type") != "BPE" or "ByteLevel" not in json.dumps(backend.get("pre_tokenizer")):
        raise ExportError("GGUF export writes byte-level BPE tokenizers (GPT-2 style, as SmolLM2's); this model's "
                            "tokenizer is another kind, so export it with --format merged and convert that with "
                            "llama.cpp.")


def _write_hyperparameters(writer: Any, config: Any, name: str, file_type: Any) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)


def _write_tokenizer(writer: Any, tokenizer: Any, n_vocab: int, pre: str | None) -> None:
    """Tokens by id (padded to the model's vocabulary), their types, then merges, special ids and the chat template
    through ``gguf.SpecialVocab`` reading the saved tokenizer files."""
    import gguf

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL if i not in added else
                         gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    if pre:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    with tempfile.TemporaryDirectory(prefix="tunewise-gguf-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        gguf.SpecialVocab(tmp, load_merges=True, n_vocab=n_vocab).add_to_gguf(writer)


def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """llama.cpp's rotary layout for a query/key projection (the inverse of transformers' GGUF loader)."""
    if n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _write_tensors(writer: Any, model: Any, config: Any, dtype: str) -> None:
    import gguf
    import numpy as np

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reads the output projection from token_embd when output.weight is absent
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"GGUF export does not know where tensor {hf_name} goes in a llama GGUF file.")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, config.num_attention_heads, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, config.num_attention_heads, config.num_key_value_heads)
        # norms stay float32, as llama.cpp writes them
        if dtype == "f16" and data.ndim > 1:
            data = data.astype(np.float16)
        writer.add_tensor(name, np.ascontiguousarray(data))
