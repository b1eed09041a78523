import csv
import json

import pytest

from conftest import shared_path, write_jsonl
from dialogtune.config import DataConfig
from dialogtune.data import load_split
from dialogtune.errors import DialogtuneError


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _hub_test_rows(n_dialogues):
    """The HF DialogSum test layout: one row per reference, ids test_K_1..3."""
    return [
        {"id": f"test_{k}_{j}", "dialogue": f"#Person1#: hi {k}\n#Person2#: bye {k}", "summary": f"summary {k}.{j}", "topic": "t"}
        for k in range(n_dialogues)
        for j in (1, 2, 3)
    ]


def test_rows_sharing_a_dialogue_become_one_multi_reference_record(tmp_path):
    _write_csv(tmp_path / "test.csv", _hub_test_rows(4))
    records = load_split(DataConfig(dataset=str(tmp_path)), "test")
    assert len(records) == 4
    assert records[2]["id"] == "test_2"
    assert records[2]["references"] == ["summary 2.1", "summary 2.2", "summary 2.3"]
    assert records[2]["reference_names"] == ["summary1", "summary2", "summary3"]


def test_hub_loading_path_reads_a_local_folder_in_hub_layout(tmp_path):
    """`loader: hub` goes through datasets.load_dataset, which takes a local folder exactly like a hub id."""
    _write_csv(tmp_path / "train.csv", [{"id": "train_0", "dialogue": "#Person1#: a", "summary": "s", "topic": "t"}])
    _write_csv(tmp_path / "validation.csv", [{"id": "dev_0", "dialogue": "#Person1#: b", "summary": "s", "topic": "t"}])
    _write_csv(tmp_path / "test.csv", _hub_test_rows(5))
    cfg = DataConfig(dataset=str(tmp_path), loader="hub")
    records = load_split(cfg, "test")
    assert [len(r["references"]) for r in records] == [3] * 5
    assert load_split(cfg, "validation")[0]["id"] == "dev_0"
    assert load_split(cfg, "train")[0]["id"] == "train_0"


def test_real_hub_test_split_groups_into_500_dialogues_with_3_references(tmp_path):
    source = shared_path("dialogsum", "dialogsum.test.jsonl")
    rows = []
    for line in source.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        k = row["fname"].split("_")[1]
        for j in (1, 2, 3):
            rows.append({"id": f"test_{k}_{j}", "dialogue": row["dialogue"], "summary": row[f"summary{j}"], "topic": row[f"topic{j}"]})
    assert len(rows) == 1500
    _write_csv(tmp_path / "test.csv", rows)
    records = load_split(DataConfig(dataset=str(tmp_path)), "test")
    assert len(records) == 500
    assert all(len(r["references"]) == 3 for r in records)
    assert records[0]["id"] == "test_0"


def test_original_dialogsum_layout_loads_with_named_references():
    folder = shared_path("dialogsum")
    cfg = DataConfig(dataset=str(folder))
    test = load_split(cfg, "test")
    assert len(test) == 500 and test[0]["id"] == "test_0"
    assert test[0]["reference_names"] == ["summary1", "summary2", "summary3"] and test[0]["topic"]
    dev = load_split(cfg, "validation")  # the file is called dialogsum.dev.jsonl
    assert len(dev) == 500 and len(dev[0]["references"]) == 1


def test_custom_column_names_work_without_code(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"key": "a1", "chat": "A: hi\nB: hello", "tldr": "They greet.", "cat": "greeting"}])
    cfg = DataConfig(dataset=str(tmp_path / "train.jsonl"), id_column="key", dialogue_column="chat", summary_column="tldr", topic_column="cat")
    (record,) = load_split(cfg, "train")
    assert record == {"id": "a1", "dialogue": "A: hi\nB: hello", "references": ["They greet."], "reference_names": ["tldr"], "topic": "greeting"}


def test_subsample_is_reproducible_and_keeps_order(small_data):
    cfg = DataConfig(dataset=str(small_data), sample_seed=3)
    first = [r["id"] for r in load_split(cfg, "train", limit=10)]
    again = [r["id"] for r in load_split(cfg, "train", limit=10)]
    other = [r["id"] for r in load_split(DataConfig(dataset=str(small_data), sample_seed=4), "train", limit=10)]
    everything = [r["id"] for r in load_split(cfg, "train")]
    assert first == again and first != other and len(first) == 10
    assert first == [i for i in everything if i in first]


def test_builtin_corpus_and_gzip_files_load():
    cfg = DataConfig(dataset="builtin:dialogs")
    assert all(load_split(cfg, split, limit=1) for split in ("train", "validation"))
    assert load_split(cfg, "test", limit=3)[0]["references"]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"id": "1", "text": "x", "summary": "y"}], "no `dialogue` column"),
        ([{"id": "1", "dialogue": "x", "summary": "  "}], "`summary` is empty"),
        ([{"id": "1", "dialogue": "", "summary": "y"}], "`dialogue` is empty"),
        ([{"id": "1", "dialogue": "x"}], "no `summary` column"),
    ],
)
def test_bad_rows_name_the_file_row_and_column(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    with pytest.raises(DialogtuneError, match=message) as err:
        load_split(DataConfig(dataset=str(path)), "test")
    assert f"{path} line 1" in str(err.value) and "\n" not in str(err.value)


def test_missing_split_lists_what_there_is(small_data):
    with pytest.raises(DialogtuneError, match=r"no `dev2` split \(found: test, train, validation\)"):
        load_split(DataConfig(dataset=str(small_data)), "dev2")
