"""Prompt text and answer tokens for models with and without a chat template.

Chat-template models (SmolLM2) render exactly as before; a tokenizer without a chat template (a base
model such as Gemma 3 270M) gets plain few-shot text, answers after ``Output:`` with a leading space
and, where the blank line is one token, that token as the end of a turn. Everything runs on tiny
tokenizers and random models built here (well under a second each).
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from tunewise.backends.base import GenerationRequest, ScoreRequest, messages
from tunewise.backends.local import (
    LocalBackend,
    answer_lead,
    continuation_ids,
    continuations_ids,
    encode,
    end_of_turn_id,
    render_messages,
)

SYSTEM = "Classify the request.\nLabels:\n- yes\n- no"
FEW_SHOT = messages(
    ("system", SYSTEM),
    ("user", "Input: is the sky blue?"),
    ("assistant", "yes"),
    ("user", "Input: is the sea dry?"),
    ("assistant", "no"),
    ("user", "Input: is grass green?"),
)
PLAIN = (
    "Classify the request.\nLabels:\n- yes\n- no\n\n"
    "Input: is the sky blue?\nOutput: yes\n\n"
    "Input: is the sea dry?\nOutput: no\n\n"
    "Input: is grass green?\nOutput:"
)

_CORPUS = [
    "Classify the request.\n\nInput: is the sky blue?\nOutput: yes\n\nInput: is the sea dry?\nOutput: no\n\n",
    "Input: is grass green?\nOutput: yes\n\nInput: card arrival, card linking, top up failed\nOutput: no\n\n",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / ( ) [ ] { } : ; , . ! ?",
]


def _blank_line_tokenizer():
    """A Gemma-like tokenizer: "\\n\\n" is one token, bos is added to plain text, no chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n+| ?[^\s]+| +"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<bos>", "<eos>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_CORPUS * 8, trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def _save_model(tokenizer, directory: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer.save_pretrained(directory)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def chatml(tiny_llama_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="module")
def byte_level(tiny_llama_dir: Path):
    """The tiny byte-level BPE without its chat template: "\\n\\n" after a word is two "\\n" tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.chat_template = None
    return tok


@pytest.fixture(scope="module")
def blank_line():
    return _blank_line_tokenizer()


@pytest.fixture(scope="module")
def plain_backend(tmp_path_factory: pytest.TempPathFactory) -> LocalBackend:
    directory = _save_model(_blank_line_tokenizer(), tmp_path_factory.mktemp("tiny_plain"))
    return LocalBackend(f"hf:{directory}", device="cpu")


# --- chat-template models: unchanged --------------------------------------------------------------


def test_chat_template_rendering_is_unchanged(chatml):
    """Pinned: SmolLM2-style (ChatML) prompts render byte for byte as before the plain format existed."""
    assert render_messages(chatml, FEW_SHOT) == (
        "<|im_start|>system\nClassify the request.\nLabels:\n- yes\n- no<|im_end|>\n"
        "<|im_start|>user\nInput: is the sky blue?<|im_end|>\n<|im_start|>assistant\nyes<|im_end|>\n"
        "<|im_start|>user\nInput: is the sea dry?<|im_end|>\n<|im_start|>assistant\nno<|im_end|>\n"
        "<|im_start|>user\nInput: is grass green?<|im_end|>\n<|im_start|>assistant\n"
    )
    # no system message: the short default one is added
    assert render_messages(chatml, messages(("user", "hi"))) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_answers_have_no_lead_and_end_with_the_template_token(chatml):
    text = render_messages(chatml, FEW_SHOT)
    ids = encode(chatml, text)
    assert answer_lead(chatml) == ""
    assert chatml.decode(continuation_ids(chatml, text, ids, "yes")) == "yes"
    assert end_of_turn_id(chatml) == chatml.convert_tokens_to_ids("<|im_end|>")


# --- template-less (base) models: plain few-shot text ---------------------------------------------


def test_plain_few_shot_format(byte_level):
    assert render_messages(byte_level, FEW_SHOT) == PLAIN
    assert render_messages(byte_level, messages(("user", "Input: hi"))) == "Input: hi\nOutput:"
    assert render_messages(byte_level, messages(("system", ""), ("user", "Input: hi"))) == "Input: hi\nOutput:"


def test_plain_final_assistant_message_is_continued(byte_level):
    continued = (*FEW_SHOT, *messages(("assistant", "It is a plant.\nAnswer:")))
    assert render_messages(byte_level, continued) == PLAIN + " It is a plant.\nAnswer:"


def test_plain_prompt_starts_with_bos_when_the_tokenizer_adds_it(blank_line, byte_level):
    assert blank_line("x")["input_ids"][0] == blank_line.bos_token_id  # the tokenizer adds bos itself
    text = render_messages(blank_line, FEW_SHOT)
    assert text == "<bos>" + PLAIN
    assert encode(blank_line, text)[0] == blank_line.bos_token_id
    assert byte_level("x")["input_ids"][0] != byte_level.bos_token_id
    assert not render_messages(byte_level, FEW_SHOT).startswith(byte_level.bos_token)


@pytest.mark.parametrize("fixture", ["byte_level", "blank_line"])
def test_plain_answers_continue_with_a_leading_space(request: pytest.FixtureRequest, fixture: str):
    tok = request.getfixturevalue(fixture)
    text = render_messages(tok, FEW_SHOT)
    ids = encode(tok, text)
    assert answer_lead(tok) == " "
    answers = ["yes", "no", "card arrival"]
    got = continuations_ids(tok, text, ids, answers)
    for answer, continuation in zip(answers, got):
        assert continuation == encode(tok, text + " " + answer)[len(ids):]
        assert tok.decode(continuation) == " " + answer
    assert continuation_ids(tok, text, ids, "yes") == got[0]
    # the answer tokens are the ones the demonstrations show
    demo = encode(tok, render_messages(tok, FEW_SHOT[:3]))
    assert demo[-len(got[0]):] == got[0]
    # after a prefix that ends in whitespace there is no second space
    assert tok.decode(continuation_ids(tok, text + " Label: ", encode(tok, text + " Label: "), "yes")) == "yes"


def test_plain_end_of_turn_is_the_blank_line_when_it_is_one_token(blank_line, byte_level):
    blank = blank_line.convert_tokens_to_ids("ĊĊ")
    assert encode(blank_line, "\n\n") == [blank]
    assert end_of_turn_id(blank_line) == blank
    # it is what follows an answer in the rendered demonstrations
    answered = encode(blank_line, render_messages(blank_line, FEW_SHOT[:3]))  # ... "Output: yes"
    following = encode(blank_line, render_messages(blank_line, FEW_SHOT[:4]))
    assert following[: len(answered)] == answered and following[len(answered)] == blank
    # byte-level BPE splits a blank line after a word into two "\n" tokens: eos closes the turn
    assert encode(byte_level, "yes\n\nInput")[1:3] == encode(byte_level, "\n") * 2
    assert end_of_turn_id(byte_level) == byte_level.eos_token_id


# --- the backend and training on a template-less model --------------------------------------------


def test_plain_backend_scores_the_answer_tokens_training_uses(plain_backend: LocalBackend):
    from tunewise.training.trainer import encode_pair

    tok, eot = plain_backend.tokenizer, plain_backend.end_of_turn_id
    assert eot == tok.convert_tokens_to_ids("ĊĊ")
    prompt_ids, continuations = plain_backend._continuations(ScoreRequest(FEW_SHOT, ("yes", "no")))
    assert [tok.decode(c) for c in continuations] == [" yes\n\n", " no\n\n"]
    for answer, continuation in zip(("yes", "no"), continuations):
        assert encode_pair(tok, eot, FEW_SHOT, answer, 512) == (prompt_ids, continuation)


@pytest.mark.parametrize("answer_prefix", ["", "Label:", "It is a plant.\nAnswer: "])
def test_plain_backend_trie_scoring_equals_naive_scoring(plain_backend: LocalBackend, answer_prefix: str):
    plain_backend.close()
    request = ScoreRequest(FEW_SHOT, ("yes", "no", "card arrival", "card linking"), answer_prefix=answer_prefix)
    [fast] = plain_backend.score([request])
    [slow] = plain_backend.score_naive([request])
    assert max(abs(a - b) for a, b in zip(fast.logprobs, slow.logprobs)) < 1e-4
    prompt_ids, _ = plain_backend._continuations(request)
    expected = PLAIN + (" " + answer_prefix if answer_prefix else "")  # "Output:" is followed by a space
    assert plain_backend.tokenizer.decode(prompt_ids) == "<bos>" + expected


def test_plain_backend_generation_drops_the_leading_space(plain_backend: LocalBackend, monkeypatch):
    tok = plain_backend.tokenizer
    script = iter(encode(tok, " yes") + [plain_backend.end_of_turn_id])
    monkeypatch.setattr(plain_backend, "_pick", lambda row, logits: next(script))
    [g] = plain_backend.generate([GenerationRequest(FEW_SHOT, max_new_tokens=10)])
    assert (g.text, g.finish_reason) == ("yes", "stop")


def test_plain_backend_fingerprint_says_plain(plain_backend: LocalBackend, tiny_llama_dir: Path):
    assert plain_backend.fingerprint().endswith("|adapter=-|prompt=plain")
    chat = LocalBackend(f"hf:{tiny_llama_dir}", device="cpu")
    assert chat.fingerprint().endswith("|float32|adapter=-")  # chat-template models keep their keys
