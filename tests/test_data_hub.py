"""``hf://`` data: Hugging Face datasets read offline from the cache or a local directory, as a JSONL file's rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunewise.data import load_splits
from tunewise.errors import DataError, TaskSpecError
from tunewise.task import parse_task

datasets = pytest.importorskip("datasets")

TOPICS = ["billing", "cards", "travel"]


def rows(n: int, *, start: int = 0) -> list[dict]:
    return [{"title": f"title {i}", "body": f"body text {i}", "topic": TOPICS[i % 3]} for i in range(start, start + n)]


def with_class_labels(records: list[dict]):
    """A Dataset whose ``topic`` is a ClassLabel (ints on disk), as Hub datasets usually store labels."""
    features = datasets.Features({"title": datasets.Value("string"), "body": datasets.Value("string"),
                                  "topic": datasets.ClassLabel(names=TOPICS)})
    return datasets.Dataset.from_dict({k: [r[k] if k != "topic" else TOPICS.index(r[k]) for r in records]
                                       for k in features}, features=features)


def spec(base: Path, **data):
    return parse_task({"kind": "classification", "seed": 0,
                       "data": {"input": ["title", "body"], "output": "topic", **data}}, base_dir=base)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty, private HF datasets cache (``load_dataset`` prepares local folders into it too)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return tmp_path / "hf-cache"


def save_dict(path: Path, splits: dict[str, list[dict]]) -> Path:
    datasets.DatasetDict({name: with_class_labels(r) for name, r in splits.items()}).save_to_disk(str(path))
    return path


def data_folder(path: Path, splits: dict[str, list[dict]]) -> Path:
    """A folder of JSONL files named by split, as load_dataset reads a local dataset repository."""
    (path / "data").mkdir(parents=True)
    for name, records in splits.items():
        (path / "data" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def cached_hub_dataset(cache: Path, repo_id: str, splits: dict[str, list[dict]], tmp_path: Path) -> None:
    """Put ``repo_id`` into the cache as ``load_dataset`` leaves a Hub dataset it prepared: the Arrow files under
    ``<cache>/<owner>___<name>/default/0.0.0/<hash>/`` (prepared here from a local folder, never downloaded)."""
    folder = data_folder(tmp_path / "prepare" / "src", splits)
    datasets.load_dataset(str(folder))
    prepared = next(p for p in (cache / "src" / "default" / "0.0.0").iterdir() if p.is_dir())
    owner, name = repo_id.split("/")
    target = cache / f"{owner}___{name}" / "default" / "0.0.0" / prepared.name
    target.mkdir(parents=True)
    for file in prepared.iterdir():
        shutil.copy(file, target / file.name.replace("src-", f"{name}-"))


# --------------------------------------------------------------------------- reading


def test_a_cached_hub_dataset_is_read_offline_like_jsonl_files(cache, tmp_path):
    train, test = rows(12), rows(6, start=100)
    cached_hub_dataset(cache, "acme/tickets", {"train": train, "test": test}, tmp_path)
    for name, records in (("train.jsonl", train), ("test.jsonl", test)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
    from_hub = load_splits(spec(tmp_path, train="hf://acme/tickets?split=train", test="hf://acme/tickets?split=test"))
    from_files = load_splits(spec(tmp_path, train="train.jsonl", test="test.jsonl"))
    def seen(examples):  # ids, texts, targets, inputs: the same path as a file's rows
        return sorted((e.id, e.text, e.target, tuple(e.inputs.items())) for e in examples)

    # the dev carve is seeded by the data hash (the rows' canonical JSON here, the file's bytes there)
    assert seen(from_hub.train + from_hub.dev) == seen(from_files.train + from_files.dev)
    assert seen(from_hub.test) == seen(from_files.test) and len(from_hub.dev) == len(from_files.dev)
    assert from_hub.test[0].text == "title: title 100\nbody: body text 100"
    assert from_hub.test[0].source == "hf://acme/tickets?split=test:1"
    assert from_hub.sources["train"].startswith("hf://acme/tickets?split=train (12 rows, datasets fingerprint ")
    assert from_files.sources["train"] == str(tmp_path / "train.jsonl")
    sliced = load_splits(spec(tmp_path, train="hf://acme/tickets?split=train[:9]", test="hf://acme/tickets?split=test"))
    assert len(sliced.train) + len(sliced.dev) == 9


def test_the_offline_switches_are_set_for_the_call_and_put_back(cache, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    seen = []
    real = datasets.load_from_disk
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets, "load_from_disk",
                        lambda *a, **k: seen.append((datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE))
                        or real(*a, **k))
    save_dict(tmp_path / "saved", {"train": rows(9), "test": rows(3, start=50)})
    load_splits(spec(tmp_path, train="hf://./saved?split=train", test="hf://./saved?split=test"))
    assert seen and all(s == (True, True) for s in seen)
    assert (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE) == (False, False)


def test_a_save_to_disk_directory_gives_train_dev_and_test_with_class_label_names(cache, tmp_path):
    save_dict(tmp_path / "saved", {"train": rows(12), "validation": rows(3, start=50), "test": rows(6, start=100)})
    splits = load_splits(spec(tmp_path, train="hf://./saved?split=train", dev="hf://./saved?split=validation",
                              test="hf://./saved?split=test"))
    assert (len(splits.train), len(splits.dev), len(splits.test)) == (12, 3, 6)
    assert splits.dev_origin == "file" and splits.test_origin == "file"
    assert {e.target for e in splits.train} == set(TOPICS)  # ClassLabel ints read as their names
    assert splits.labels == tuple(sorted(TOPICS))
    assert splits.sources["dev"].startswith(f"hf://{(tmp_path / 'saved').resolve()}?split=validation (3 rows")
    absolute = load_splits(spec(tmp_path / "elsewhere", train=f"hf://{tmp_path}/saved?split=train",
                                dev=f"hf://{tmp_path}/saved?split=validation", test=f"hf://{tmp_path}/saved?split=test"))
    assert absolute.data_hash == splits.data_hash  # the rows, not how they were named


def test_a_folder_of_data_files_and_an_unlabelled_pool(cache, tmp_path):
    data_folder(tmp_path / "repo", {"train": rows(12), "test": rows(6, start=100)})
    pool = with_class_labels(rows(5, start=300)).remove_columns("topic")
    pool.save_to_disk(str(tmp_path / "pool"))
    splits = load_splits(spec(tmp_path, train="hf://./repo?split=train", test="hf://./repo?split=test",
                              unlabelled="hf://./pool?split=train"))
    assert len(splits.test) == 6 and len(splits.unlabelled) == 5 and splits.pool_hash
    assert all(e.target is None for e in splits.unlabelled) and "unlabelled" in splits.sources


def test_the_data_hash_is_stable_and_follows_any_change_to_the_rows(cache, tmp_path):
    def hashed(records: list[dict]) -> str:
        shutil.rmtree(tmp_path / "saved", ignore_errors=True)
        save_dict(tmp_path / "saved", {"train": records, "test": rows(6, start=100)})
        return load_splits(spec(tmp_path, train="hf://./saved?split=train", test="hf://./saved?split=test")).data_hash

    first = hashed(rows(12))
    assert hashed(rows(12)) == first  # saved again: other Arrow files and fingerprint, same rows, same hash
    changed = rows(12)
    changed[4]["body"] = "body text 4, edited"
    assert hashed(changed) != first
    relabelled = rows(12)
    relabelled[0]["topic"] = "travel"
    assert hashed(relabelled) != first
    assert hashed(rows(12)[::-1]) != first  # row order is part of the data, as in a file


# --------------------------------------------------------------------------- errors


def test_a_dataset_that_is_not_cached_is_one_sentence_saying_nothing_is_downloaded(cache, tmp_path):
    with pytest.raises(DataError) as err:
        load_splits(spec(tmp_path, train="hf://acme/absent?split=train", test="t.jsonl"))
    message = str(err.value)
    assert message.startswith("hf://acme/absent?split=train: the dataset acme/absent is not in the local Hugging "
                              "Face cache")
    assert "tunewise never downloads" in message and "datasets.load_dataset('acme/absent')" in message
    assert message.endswith(".") and ". " not in message and "\n" not in message


def test_a_missing_config_or_split_is_one_sentence(cache, tmp_path):
    cached_hub_dataset(cache, "acme/tickets", {"train": rows(6), "test": rows(3, start=9)}, tmp_path)
    with pytest.raises(DataError, match=r"^hf://acme/tickets/other\?split=train: the dataset acme/tickets \(config "
                       r"other\) is not in the local Hugging Face cache .* never downloads"):
        load_splits(spec(tmp_path, train="hf://acme/tickets/other?split=train", test="t.jsonl"))
    with pytest.raises(DataError, match=r"^hf://acme/tickets\?split=dev: the dataset has no split 'dev' \(its splits: "
                       r"train, test\)\.$"):
        load_splits(spec(tmp_path, train="hf://acme/tickets?split=train", test="hf://acme/tickets?split=dev"))
    save_dict(tmp_path / "saved", {"train": rows(6)})
    with pytest.raises(DataError, match=r"has no split 'test' \(its splits: train\)\.$"):
        load_splits(spec(tmp_path, train="hf://./saved?split=train", test="hf://./saved?split=test"))
    with pytest.raises(DataError, match=r"^hf://./nowhere\?split=train: .*nowhere is not a directory"):
        load_splits(spec(tmp_path, train="hf://./nowhere?split=train", test="t.jsonl"))


def test_row_errors_name_the_reference_and_the_row(cache, tmp_path):
    bad = rows(6)
    bad[2] = {"title": "no body here", "topic": "cards"}
    datasets.DatasetDict({"train": datasets.Dataset.from_list(bad),
                          "test": datasets.Dataset.from_list(rows(3, start=9))}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"^hf://./saved\?split=train: row 3 field 'body' is null \(it needs a "
                       r"value\)\.$"):
        load_splits(spec(tmp_path, train="hf://./saved?split=train", test="hf://./saved?split=test"))
    unseen = rows(3, start=9)
    unseen[1]["topic"] = "refunds"
    shutil.rmtree(tmp_path / "saved")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows(6)),
                          "test": datasets.Dataset.from_list(unseen)}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(DataError, match=r"^hf://./saved\?split=test: row 2: label 'refunds' never appears in train"):
        load_splits(spec(tmp_path, train="hf://./saved?split=train", test="hf://./saved?split=test"))


@pytest.mark.parametrize("ref, problem", [
    ("hf://acme/tickets", "names no split; add ?split=train"),
    ("hf://acme/tickets?split=train&revision=main", "names an unknown key 'revision'"),
    ("hf://a/b/c/d?split=train", "is neither owner/name[/config] on the Hub nor a local directory"),
    ("hf://acme/tickets/x?split=train&config=y", "names its config twice"),
])
def test_a_malformed_reference_is_a_task_error_naming_the_key(tmp_path, ref, problem):
    with pytest.raises(TaskSpecError) as err:
        spec(tmp_path, train=ref, test="t.jsonl")
    assert "data.train" in str(err.value) and problem in str(err.value)


def test_a_reference_round_trips_through_the_recorded_spec(tmp_path):
    s = spec(tmp_path, train="hf://acme/tickets/en?split=train[:100]", test="hf://./saved?split=test&config=x")
    dumped = s.model_dump(mode="json")["data"]
    assert dumped["train"] == "hf://acme/tickets/en?split=train[:100]"
    assert dumped["test"] == "hf://./saved?split=test&config=x"
    again = parse_task({"kind": "classification", "data": dumped}, base_dir=tmp_path)
    assert again.data == s.data


def test_a_run_records_and_shows_where_its_hf_data_came_from(cache, tmp_path):
    from tunewise.run import run_task

    save_dict(tmp_path / "saved", {"train": rows(30), "test": rows(9, start=100)})
    task = parse_task({"name": "hub", "kind": "classification", "model": "fake:random", "embedder": "hashing",
                       "data": {"train": "hf://./saved?split=train", "test": "hf://./saved?split=test",
                                "input": ["title", "body"], "output": "topic"}}, base_dir=tmp_path)
    outcome = run_task(task, rungs=["knn"])
    data = json.loads(outcome.results_path.read_text())["data"]
    assert data["sources"]["test"].startswith(f"hf://{(tmp_path / 'saved').resolve()}?split=test (9 rows")
    summary = outcome.summary_path.read_text()
    assert f"- Data test: hf://{(tmp_path / 'saved').resolve()}?split=test (9 rows, datasets fingerprint" in summary
    assert "Data train: hf://" in outcome.report_path.read_text()
