"""``tunewise export``: a version as a PEFT adapter, a merged model, GGUF, an Ollama Modelfile or its prompt file."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from tunewise.cli import cli
from tunewise.errors import ExportError
from tunewise.export import export_version
from tunewise.run import run_task
from tunewise.store import Store
from tunewise.task import load_task
from tunewise.versions import create_version, load_candidate

from .test_finetuning import tiny_task

STEPS = "max_steps: 2, batch_size: 8, learning_rate: 0.01, r: 4, alpha: 8, dropout: 0.0, evals_per_epoch: 1"
TEXT = "How do I activate my new card?"


@pytest.fixture(scope="module")
def tuned(tiny_llama_dir, tiny_bert_dir, tmp_path_factory):
    """One run on the tiny Llama: a LoRA rung, a classifier-head rung, a few-shot prompt rung, a fine-tuned encoder."""
    tmp = tmp_path_factory.mktemp("export")
    rungs = (f"  - {{name: lora, strategy: finetune, params: {{{STEPS}}}}}\n"
             f"  - {{name: head, strategy: finetune, params: {{{STEPS}, head: classifier}}}}\n"
             "  - {name: few, strategy: prompt, params: {k: 3, selection: balanced, max_new_tokens: 12}}\n"
             f"  - {{name: enc, strategy: encoder_ft, params: {{encoder: '{tiny_bert_dir}', epochs: 1, "
             "batch_size: 16, max_length: 16}}\n")
    task = tiny_task(tmp, tiny_llama_dir, rungs, n_train=24, n_test=4)
    outcome = run_task(load_task(task), task_path=task, report=False)
    assert all(r.status == "finished" for r in outcome.results.rungs), [r.error for r in outcome.results.rungs]
    with Store(tmp / ".tunewise") as store:
        versions = {r: create_version(store, outcome.results.run_id, r) for r in ("lora", "head", "few", "enc")}
    return tmp / ".tunewise", versions


def _export(tuned, rung, fmt, out, **kw):
    root, versions = tuned
    with Store(root) as store:
        return export_version(versions[rung], store, fmt=fmt, out=out, **kw)


def _ids(tokenizer, text=TEXT):
    return tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids


def _adapter_on_base(tuned, base_dir, rung="lora"):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root, versions = tuned
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(root / versions[rung].manifest["artifact"]["path"])).eval()


def test_peft_export_names_the_real_base_and_carries_the_tokenizer(tuned, tiny_llama_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    result = _export(tuned, "lora", "peft", tmp_path / "peft")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_llama_dir.resolve())  # not tunewise's cache
    assert (tmp_path / "peft" / "tokenizer.json").is_file() and (tmp_path / "peft" / "adapter_model.safetensors").is_file()
    loaded = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "peft", dtype=torch.float32).eval()
    ids = _ids(AutoTokenizer.from_pretrained(tmp_path / "peft"))
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, _adapter_on_base(tuned, tiny_llama_dir)(ids).logits, atol=1e-5)
    assert result.serve_command.startswith(f"vllm serve {tiny_llama_dir.resolve()} --enable-lora --lora-modules ")
    assert f"={(tmp_path / 'peft').resolve()}" in result.serve_command
    assert "--max-lora-rank" not in result.serve_command  # r=4 fits vLLM's default of 16
    assert {"prompt.json", "prompt.md", "tunewise_chat_template.jinja", "tunewise_export.json"} <= {
        p.name for p in (tmp_path / "peft").iterdir()}


def test_merged_export_loads_with_plain_transformers_and_matches_the_adapter(tuned, tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = _export(tuned, "lora", "merged", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert merged.dtype == torch.float32 and not hasattr(merged, "peft_config")
    ids = _ids(AutoTokenizer.from_pretrained(tmp_path / "merged"))
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, _adapter_on_base(tuned, tiny_llama_dir)(ids).logits, atol=1e-5)
    assert result.serve_command.startswith(f"vllm serve {(tmp_path / 'merged').resolve()} --served-model-name toy-")


@pytest.mark.parametrize(("dtype", "atol"), [("f32", 1e-4), ("f16", 2e-2)])
def test_gguf_export_loads_back_with_transformers_gguf_loader(tuned, tmp_path, dtype, atol):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = _export(tuned, "lora", "gguf", tmp_path / "gguf", gguf_dtype=dtype)
    merged_dir = tmp_path / "merged"
    _export(tuned, "lora", "merged", merged_dir)
    gguf = next(p for p in result.files if p.suffix == ".gguf")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    reference_tok = AutoTokenizer.from_pretrained(merged_dir)
    assert torch.equal(_ids(tokenizer), _ids(reference_tok)) and tokenizer.chat_template == reference_tok.chat_template
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        diff = (loaded(_ids(reference_tok)).logits - merged(_ids(reference_tok)).logits).abs().max().item()
    assert diff <= atol
    assert result.serve_command.startswith(f"llama-server -m {gguf.resolve()} --temp 0 -n 32")


def test_ollama_modelfile_holds_the_scored_template_system_prompt_and_decoding(tuned, tmp_path):
    result = _export(tuned, "lora", "ollama", tmp_path / "ollama", name="toy-lora")
    text = (tmp_path / "ollama" / "Modelfile").read_text()
    prompt = json.loads((tmp_path / "ollama" / "prompt.json").read_text())
    assert prompt["system"] == "Classify the input. Reply with the label only."  # the tuned model's compact prompt
    assert text.startswith("FROM ./toy-lora.f32.gguf\n") and (tmp_path / "ollama" / "toy-lora.f32.gguf").is_file()
    assert ('TEMPLATE """{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}'
            '<|im_end|>\n{{ else if eq .Role "user" }}<|im_start|>user\nInput: {{ .Content }}<|im_end|>\n') in text
    assert text.rstrip().endswith('PARAMETER stop "<|im_end|>"')
    assert f'SYSTEM """{prompt["system"]}"""' in text and "PARAMETER temperature 0\nPARAMETER num_predict 32" in text
    assert result.serve_command.endswith("ollama create toy-lora -f Modelfile && ollama run toy-lora")


def test_the_exported_chat_template_rebuilds_the_scored_prompt_from_the_raw_input(tuned, tiny_llama_dir, tmp_path):
    """The few-shot prompt rung: tunewise_chat_template.jinja turns one raw user message into the exact scored prompt."""
    from transformers import AutoTokenizer

    from tunewise.backends.local import render_messages

    root, versions = tuned
    result = _export(tuned, "few", "prompt", tmp_path / "prompt")
    with Store(root) as store:
        program, _ = load_candidate(versions["few"], store)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    template = (tmp_path / "prompt" / "tunewise_chat_template.jinja").read_text()
    served = tokenizer.apply_chat_template([{"role": "user", "content": TEXT}], chat_template=template,
                                           tokenize=False, add_generation_prompt=True)
    assert served == render_messages(tokenizer, program.prompt_for(TEXT, program.fixed_demos))
    prompt = json.loads((tmp_path / "prompt" / "prompt.json").read_text())
    assert [d["input"] for d in prompt["demonstrations"]] == [t for t, _ in program.fixed_demos]
    assert len(prompt["demonstrations"]) == 3 and prompt["decoding"]["max_new_tokens"] == 12
    assert prompt["labels"] == program.labels and prompt["user_wrap"] == ["Input: ", ""]
    assert prompt["system"] == program.prompt_for(TEXT, ())[0].content and "Labels:" in prompt["system"]
    assert result.serve_command == (f"vllm serve {tiny_llama_dir.resolve()} --chat-template "
                                    f"{tmp_path / 'prompt' / 'tunewise_chat_template.jinja'}")
    assert "## Demonstrations (fixed: 3 drawn" in (tmp_path / "prompt" / "prompt.md").read_text()


def test_a_prompt_version_exports_to_ollama_with_its_demonstrations_as_messages(tuned, tmp_path):
    _export(tuned, "few", "ollama", tmp_path / "ollama", gguf_dtype="f16")
    text = (tmp_path / "ollama" / "Modelfile").read_text()
    prompt = json.loads((tmp_path / "ollama" / "prompt.json").read_text())
    messages = [line for line in text.splitlines() if line.startswith("MESSAGE ")]
    assert messages[0] == f'MESSAGE user """{prompt["demonstrations"][0]["input"]}"""' and len(messages) == 6
    assert "PARAMETER num_predict 12" in text


def test_a_classifier_head_is_merged_with_its_head_and_refused_as_a_vllm_lora(tuned, tiny_llama_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from tunewise.backends.classifier import ClassifierBackend

    root, versions = tuned
    with pytest.raises(ExportError, match="modules_to_save, which vLLM's LoRA loader rejects; use --format merged"):
        _export(tuned, "head", "peft", tmp_path / "peft")
    assert not (tmp_path / "peft").exists()  # refused before anything was written
    with pytest.raises(ExportError, match="not a language model Ollama can run"):
        _export(tuned, "head", "ollama", tmp_path / "ollama")
    result = _export(tuned, "head", "merged", tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    backend = ClassifierBackend(f"hf:{tiny_llama_dir}", adapter=root / versions["head"].manifest["artifact"]["path"])
    ids = _ids(backend.tokenizer)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, backend.model(ids).logits, atol=1e-5)
    assert list(merged.config.id2label.values()) == backend.labels
    assert "--runner pooling --convert classify" in result.serve_command


def test_a_fine_tuned_encoder_exports_as_its_saved_directory(tuned, tmp_path):
    from tunewise.training.encoder import load_encoder_classifier

    with pytest.raises(ExportError, match="exports as merged only"):
        _export(tuned, "enc", "gguf", tmp_path / "gguf")
    result = _export(tuned, "enc", "merged", tmp_path / "enc")
    _, _, config = load_encoder_classifier(tmp_path / "enc")
    assert config["labels"] and result.serve_command == "" and "tunewise serve" in result.notes[0]


def test_versions_without_weights_or_prompt_are_refused_in_one_sentence(tmp_path):
    from .test_run import write_task

    task = write_task(tmp_path)
    outcome = run_task(load_task(task), rungs=["knn", "zero_shot"], task_path=task, report=False)
    with Store(tmp_path / ".tunewise") as store:
        knn = create_version(store, outcome.results.run_id, "knn")
        with pytest.raises(ExportError, match="baseline with no model weights or prompt"):
            export_version(knn, store, fmt="prompt", out=tmp_path / "x")
        zero = create_version(store, outcome.results.run_id, "zero_shot")
        with pytest.raises(ExportError, match="runs on fake:random, whose weights tunewise does not hold"):
            export_version(zero, store, fmt="gguf", out=tmp_path / "g")
        result = export_version(zero, store, fmt="prompt", out=tmp_path / "p")  # the prompt of an API model
    prompt = json.loads((tmp_path / "p" / "prompt.json").read_text())
    assert prompt["model"] == "fake:random" and prompt["base_model"] is None and prompt["demonstrations"] == []
    assert result.serve_command == "" and prompt["decoding"]["mode"] == "score" and "fake:random" in result.notes[0]


def test_gguf_refuses_an_architecture_it_does_not_write(tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tunewise.export.gguf_file import write_gguf

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=420))
    with pytest.raises(ExportError, match="supports Llama-architecture causal LMs"):
        write_gguf(model, AutoTokenizer.from_pretrained(tiny_llama_dir), tmp_path / "x.gguf")


def test_a_template_less_model_keeps_tunewise_plain_prompt(tiny_llama_dir):
    from transformers import AutoTokenizer

    from tunewise.backends.base import Message
    from tunewise.backends.local import render_messages
    from tunewise.export.chat_format import derive_chat_format, jinja_template

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = None
    fmt = derive_chat_format(tokenizer)
    template = jinja_template(fmt, ("Input: ", ""), system="Classify.", demos=[("a card", "card_arrival")])
    tokenizer.chat_template = template
    served = tokenizer.apply_chat_template([{"role": "user", "content": "b"}], tokenize=False,
                                           add_generation_prompt=True)
    tokenizer.chat_template = None
    scored = [Message("system", "Classify."), Message("user", "Input: a card"), Message("assistant", "card_arrival"),
              Message("user", "Input: b")]
    assert served == render_messages(tokenizer, scored) and served.endswith("Input: b\nOutput:")


def test_export_cli_prints_the_files_and_the_serve_command(tuned, tmp_path):
    root, versions = tuned
    ok = CliRunner().invoke(cli, ["export", versions["lora"].id[:6], "--format", "peft", "--out", str(tmp_path / "o"),
                                  "--store", str(root)])
    assert ok.exit_code == 0, ok.output
    assert "adapter_config.json" in ok.output and "serve: vllm serve " in ok.output
    refused = CliRunner().invoke(cli, ["export", versions["head"].id, "--format", "peft", "--out",
                                       str(tmp_path / "r"), "--store", str(root)])
    assert refused.exit_code == 2 and refused.output.startswith("error: Version ") and len(
        refused.output.strip().splitlines()) == 1
