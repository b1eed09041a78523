import csv
import json
import logging

import pytest

from conftest import shared_path, write_jsonl
from dialogtune.config import DataConfig
from dialogtune.data import check_splits_disjoint, load_split, split_info
from dialogtune.splits import check_overlap
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


# ------------------------------------------------------------ seeded splits and overlap


def _dialogues(n, prefix="d"):
    return [{"id": f"{prefix}{k}", "dialogue": f"#Person1#: hello number {k}\n#Person2#: bye {k}", "summary": f"s {k}"} for k in range(n)]


def _split_ids(cfg):
    return {split: [r["id"] for r in load_split(cfg, split)] for split in ("train", "validation", "test")}


def test_a_single_file_is_split_90_5_5_by_seed_with_every_dialogue_once(tmp_path, caplog):
    path = write_jsonl(tmp_path / "dialogues.jsonl", _dialogues(100))
    caplog.set_level(logging.INFO, logger="dialogtune")
    parts = _split_ids(DataConfig(dataset=str(path)))
    assert [len(ids) for ids in parts.values()] == [90, 5, 5]
    assert sorted(i for ids in parts.values() for i in ids) == sorted(f"d{k}" for k in range(100))  # each once
    assert f"split {path} (100 dialogues) into train/validation/test = 90/5/5 with seed 0" in caplog.text
    assert _split_ids(DataConfig(dataset=str(path))) == parts  # stable across calls
    other = _split_ids(DataConfig(dataset=str(path), split_seed=1))
    assert other["test"] != parts["test"] and [len(ids) for ids in other.values()] == [90, 5, 5]
    assert split_info(DataConfig(dataset=str(path))) == {
        "source": str(path), "sizes": {"train": 90, "validation": 5, "test": 5}, "seed": 0, "fractions": [0.9, 0.05, 0.05]
    }


def test_split_sizes_are_respected_and_rounded_to_use_every_dialogue(tmp_path):
    path = write_jsonl(tmp_path / "dialogues.jsonl", _dialogues(101))
    parts = _split_ids(DataConfig(dataset=str(path), split_sizes=[0.7, 0.1, 0.2]))
    assert [len(ids) for ids in parts.values()] == [71, 10, 20]
    assert len({i for ids in parts.values() for i in ids}) == 101


@pytest.mark.parametrize("sizes", ["[0.5,0.5]", "[0.9,0.1,0.1]", "[0,0.5,0.5]", "[0.9,-0.1,0.2]", "a,b,c"])
def test_bad_split_sizes_are_one_line_exit_2(capsys, tmp_path, sizes):
    from dialogtune.cli import main

    path = write_jsonl(tmp_path / "dialogues.jsonl", _dialogues(10))
    assert main(["train", "--dataset", str(path), "--output", str(tmp_path / "run"), "--data.split_sizes", sizes]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "`data.split_sizes` is" in lines[0] and "sum to 1" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_folder_with_one_unnamed_file_is_split_like_the_file(tmp_path):
    write_jsonl(tmp_path / "data" / "dialogues.jsonl", _dialogues(40))
    write_jsonl(tmp_path / "dialogues.jsonl", _dialogues(40))
    assert _split_ids(DataConfig(dataset=str(tmp_path / "data"))) == _split_ids(DataConfig(dataset=str(tmp_path / "dialogues.jsonl")))


def test_a_file_named_for_a_split_is_that_split_only(tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", _dialogues(20))
    assert len(load_split(DataConfig(dataset=str(path)), "test")) == 20
    with pytest.raises(DialogtuneError, match=r"no `train` split \(found: test\)"):
        load_split(DataConfig(dataset=str(path)), "train")


def test_near_duplicates_stay_in_one_part_of_the_split(tmp_path):
    rows = _dialogues(60) + [{**row, "id": f"x{row['id']}", "dialogue": row["dialogue"].upper()} for row in _dialogues(60)]
    path = write_jsonl(tmp_path / "dialogues.jsonl", rows)
    cfg = DataConfig(dataset=str(path), split_sizes=[0.5, 0.25, 0.25])
    train = load_split(cfg, "train")
    assert check_splits_disjoint(cfg, train, ["validation", "test"], allow=False)["overlap"] == 0


def test_an_empty_part_of_a_split_is_an_error_naming_the_fix(tmp_path):
    path = write_jsonl(tmp_path / "dialogues.jsonl", _dialogues(3))
    with pytest.raises(DialogtuneError, match="leaves the `test` split empty; add dialogues"):
        load_split(DataConfig(dataset=str(path)), "test")


def test_real_splits_have_no_split_info(small_data):
    assert split_info(DataConfig(dataset=str(small_data))) is None


def test_summarize_file_and_score_references_read_every_row(tmp_path):
    from dialogtune.scoring import score_files
    from dialogtune.summarize import read_dialogues

    path = write_jsonl(tmp_path / "refs.jsonl", _dialogues(20))
    dialogues, ids = read_dialogues(None, str(path))
    assert len(dialogues) == 20 and ids == [f"d{k}" for k in range(20)]
    preds = tmp_path / "p.txt"
    preds.write_text("".join(f"s {k}\n" for k in range(20)))
    result = score_files(preds, path, resamples=10)
    assert result["num_examples"] == 20 and result["rouge"]["rouge1"]["score"] == pytest.approx(100)


def _record(rid, dialogue):
    return {"id": rid, "dialogue": dialogue, "references": ["s"], "reference_names": ["summary"], "topic": ""}


def test_overlap_by_id_is_refused_with_count_and_id():
    train = [_record("a", "#Person1#: one"), _record("b", "#Person1#: two")]
    test = [_record("b", "#Person1#: something else"), _record("c", "#Person1#: three")]
    with pytest.raises(DialogtuneError, match=r"^1 of 2 test dialogues also appear in the train split \(e\.g\. id b, same id") as err:
        check_overlap(train, test, allow=False, name="test")
    assert "--allow-overlap" in str(err.value)


def test_overlap_by_text_ignores_case_whitespace_and_punctuation():
    train = [_record("train_1", "#Person1#: Hello,  there!\n#Person2#: Hi.")]
    test = [_record("test_7", "#person1# hello there\n  #Person2#: hi"), _record("test_8", "#Person1#: other")]
    with pytest.raises(DialogtuneError, match=r"1 of 2 test dialogues .* \(e\.g\. id test_7, same text as train id train_1\)"):
        check_overlap(train, test, allow=False, name="test")


def test_allowed_overlap_warns_and_is_returned(caplog):
    train = [_record("a", "#Person1#: one")]
    test = [_record("a", "#Person1#: one"), _record("z", "#Person1#: zzz")]
    assert check_overlap(train, [test[1]], allow=False) == {"overlap": 0, "example": None}
    assert check_overlap(train, test, allow=True, name="test") == {"overlap": 1, "example": "a"}
    assert "1 of 2 test dialogues also appear in the train split" in caplog.text


def test_check_splits_disjoint_loads_the_evaluation_splits_that_exist(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", _dialogues(5))
    write_jsonl(tmp_path / "test.jsonl", _dialogues(2))  # the same two first dialogues: a leak
    cfg = DataConfig(dataset=str(tmp_path))
    train = load_split(cfg, "train")
    with pytest.raises(DialogtuneError, match="2 of 2 test dialogues"):
        check_splits_disjoint(cfg, train, ["validation", "test"], allow=False)
    found = check_splits_disjoint(cfg, train, ["validation", "test"], allow=True)
    assert found == {"overlap": 2, "example": "d0", "splits": {"test": 2}}  # no validation file: skipped
