"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest

# nothing in the test suite may reach the Hugging Face hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the built-in price table, whether or not litellm is installed (tests of the maintained table switch it back on)
os.environ.setdefault("TUNEWISE_PRICE_TABLE", "builtin")

_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_CORPUS = [
    "Is the sky blue? Answer yes or no.",
    "yes no maybe yes no",
    "You are a helpful assistant.",
    "activate my card, card arrival, card linking, lost or stolen card, card not working",
    "top up failed, top up reverted, pending top up, exchange rate, exchange charge",
    "Classify the banking query into one of the labels below. Label: card_arrival",
    "How do I activate my new card? When will my card arrive? I lost my card yesterday.",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / ( ) [ ] { } : ; , . ! ?",
]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random ``LlamaForCausalLM`` + byte-level BPE ChatML tokenizer saved to a directory.

    Built in well under a second, entirely offline: the tokenizer is trained here on a few
    sentences (special tokens ``<|im_start|>``/``<|im_end|>``, eos = pad = ``<|im_end|>`` as in
    SmolLM2), and the model is 2 layers, hidden size 32, 4 heads, 2 KV heads.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny_llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    tokenizer.chat_template = _CHATML
    tokenizer.save_pretrained(directory)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.2,  # peaky random logits: no near-ties for greedy comparisons
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random ``BertModel`` (2 layers, hidden 32) and a WordPiece tokenizer over the toy vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from .test_run import WORDS

    directory = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for s in WORDS.values() for w in s.split()})]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    (directory / "modules.json").write_text("[]")  # a sentence-transformers file: copied beside the tuned model
    return directory


# the OpenAI-compatible stand-in server, for every test module that needs an API model
from .test_openai_backend import server  # noqa: E402, F401
