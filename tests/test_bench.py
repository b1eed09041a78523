"""bench/bench_speed.py and its modules: fair stand-in models, FLOP accounting, the two recipes' batches, the JSON contract,
and that the evaluation optimisations (batching, length sorting, LoRA merging) leave the text unchanged."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys

import pytest
import torch

from tests.conftest import REPO, assert_same_text_where_decisive, greedy_margin, shared_path

# bench/ is a folder of scripts that import each other as siblings, so it goes on the path as they expect.
sys.path.insert(0, str(REPO / "bench"))
import bench_speed  # noqa: E402
import compare_runs  # noqa: E402
import host  # noqa: E402
import measure  # noqa: E402
import recipes  # noqa: E402
import repeats  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return recipes.load_tokenizer(shared_path("t5-tokenizer"))


@pytest.mark.parametrize("name, expected", [("small", 76_961_152), ("base", 247_577_856)])
def test_stand_in_shapes_match_the_checkpoints(name, expected):
    from dialogtune.modeling import parameter_counts

    model = recipes.build_model(measure.SHAPES[name], device="meta")  # no weights allocated: fast
    assert parameter_counts(model) == (expected, expected)
    assert model.lm_head.weight is not model.shared.weight  # FLAN-T5 has its own lm_head
    assert model.config.scale_decoder_outputs is False  # no tied-head rescaling, as in FLAN-T5
    assert model.config.feed_forward_proj == "gated-gelu"


def test_flop_counter():
    shape = measure.SHAPES["small"]
    lengths = ([230, 180, 300], [40, 25, 60])
    real = measure.batch_flops(shape, *lengths, "full")
    # No padding: executed and useful FLOPs agree.
    assert measure.batch_flops(shape, [200] * 3, [40] * 3, "full", padded=(200, 40)) == pytest.approx(
        measure.batch_flops(shape, [200] * 3, [40] * 3, "full"))
    # Padding to the batch maximum, and much more to 512, executes more.
    assert measure.batch_flops(shape, *lengths, "full", padded=(300, 60)) / real > 1
    # (Not 512/230-fold: the decoder and lm_head dominate, and 512 pads are far more than 40 real targets.)
    assert measure.batch_flops(shape, *lengths, "full", padded=(512, 512)) / real > 4
    # Full training is 3 x forward; LoRA skips the frozen weight gradients, so it sits between 2x and 3x.
    forward = measure.flops(shape, 230, 40, train=False)
    assert measure.flops(shape, 230, 40, "full") == pytest.approx(3 * forward)
    assert 2 * forward < measure.flops(shape, 230, 40, "lora") < 3 * forward
    # The forward pass is about 2 x parameters x tokens (embeddings are lookups, not matmuls).
    matmul_params = shape.params - shape.vocab_size * shape.d_model  # all but the input embedding
    assert measure.flops(shape, 1, 1, train=False) == pytest.approx(2 * matmul_params, rel=0.02)


def test_notebook_batch_trains_on_pads_and_ours_does_not(tokenizer):
    from dialogtune.preprocess import collator, tokenize

    prompts, summaries = recipes.load_examples(4, shared_path("dialogsum", "dialogsum.dev.jsonl"))
    rows = recipes.notebook_dataset(tokenizer, prompts, summaries)
    batch = recipes.notebook_collator()([rows[i] for i in range(4)])
    assert "attention_mask" not in batch
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 512)
    assert (batch["labels"] == 0).any() and not (batch["labels"] == -100).any()

    dataset, _ = tokenize(tokenizer, prompts, summaries, 512, 128)
    model = recipes.build_model(measure.SHAPES["tiny"])
    ours = collator(tokenizer, model)([{k: dataset[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(4)])
    assert (ours["labels"] == -100).any() and not (ours["labels"] == 0).any()
    assert ours["attention_mask"].sum() == (ours["input_ids"] != 0).sum()
    assert ours["input_ids"].shape[1] == max(len(ids) for ids in dataset["input_ids"]) < 512
    # Both count the same real tokens, so throughput compares the same work.
    assert (batch["input_ids"] > 0).sum() == (ours["input_ids"] > 0).sum()
    assert (batch["labels"] > 0).sum() == (ours["labels"] > 0).sum()


def test_quick_json_contract(tmp_path):
    shared_path("dialogsum", "dialogsum.dev.jsonl")
    output = tmp_path / "bench.json"
    # 2 rounds, not quick's 3: enough to pair rounds, and a third of the test's time.
    bench_speed.main(["--quick", "--shape", "tiny", "--in-process", "--steps", "1", "--batch-size", "1", "--rounds", "2",
                "--eval-examples", "2", "--new-tokens", "3", "--levers", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["matmul_peak_gflops"] > 0
    assert {(r["shape"], r["method"]) for r in report["train"]} == {("tiny", "full"), ("tiny", "lora")}
    for row in report["train"]:
        for key in ("baseline_tokens_per_s", "tokens_per_s", "ratio", "flop_ratio", "mfu", "peak_rss_bytes"):
            assert isinstance(row[key], (int, float)) and row[key] > 0, key
        assert row["flop_ratio"] > 1  # the notebook pads to 512
    levers = {(r["method"], r["lever"]): r for r in report["levers"]}
    assert set(levers) == {("full", "dropout 0"), ("lora", "dropout 0"), ("lora", "lora_dropout 0.05 (the notebook's)"),
                           ("lora", "no activation checkpointing")}
    for row in levers.values():
        assert row["tokens_per_s"] > 0 and row["vs_default"] > 0 and row["ratio"] > 0
    (row,) = report["eval"]
    for key in ("baseline_summaries_per_s", "summaries_per_s", "ratio"):
        assert row[key] > 0
    assert row["flop_ratio"] > 1  # the loop encodes at 512
    assert row["shape"] == "tiny"
    # Repeats: every ratio is the median of the paired rounds, with its min-max; both matmul peaks and the host.
    assert report["plan"]["rounds"] == 2 and report["matmul_peak_after_gflops"] > 0
    for row in [*report["train"], *report["eval"]]:
        assert len(row["ratio_rounds"]) == 2 and row["ratio_min"] <= row["ratio"] <= row["ratio_max"]
    (lora,) = [r for r in report["train"] if r["method"] == "lora"]
    assert lora["tokens_vs_full_min"] <= lora["tokens_vs_full"] <= lora["tokens_vs_full_max"]
    assert set(report["host"]["matmul_peak_gflops"]) == {"before", "after"}
    assert compare_runs.compare(report, report) == (compare_runs.compare(report, report)[0], True)


def test_eval_only_times_the_ctranslate2_engines_beside_both_recipes(tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    shared_path("dialogsum", "dialogsum.dev.jsonl")
    output = tmp_path / "bench.json"
    bench_speed.main(["--eval-only", "--shape", "tiny", "--in-process", "--rounds", "1", "--eval-examples", "2",
                      "--new-tokens", "3", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["train"] == [] and report["levers"] == []
    (row,) = report["eval"]
    for engine in ("ct2_float32", "ct2_int8"):
        for key in ("summaries_per_s", "ratio", "vs_dialogtune", "conversion_s"):
            assert row[f"{engine}_{key}"] > 0, (engine, key)
        assert row[f"{engine}_ratio"] == pytest.approx(row[f"{engine}_summaries_per_s"] / row["baseline_summaries_per_s"])
        assert 0 <= row[f"{engine}_same_text"] <= 2
    assert "ct2 int8" in capsys.readouterr().out
    plan = bench_speed.make_plan(bench_speed.parse_args(["--eval-only", "--no-ct2"]))
    assert plan.eval_shapes == ["small", "base"] and plan.shapes == [] and not plan.ct2


def test_lora_vs_full_reports_both_checkpointing_variants(tmp_path):
    shared_path("dialogsum", "dialogsum.dev.jsonl")
    output = tmp_path / "bench.json"
    bench_speed.main(["--lora-vs-full", "--shape", "tiny", "--in-process", "--steps", "1", "--batch-size", "1",
                      "--rounds", "2", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["eval"] == [] and [r["method"] for r in report["train"]] == ["full"]
    variants = {r["variant"]: r for r in report["lora_vs_full"]}
    assert set(variants) == {"activation checkpointing off", "activation checkpointing on"}
    for row in variants.values():
        assert row["tokens_vs_full_min"] <= row["tokens_vs_full"] <= row["tokens_vs_full_max"]
        assert row["peak_rss_vs_full"] > 0 and len(row["tokens_vs_full_rounds"]) == 2


def test_quick_plan_interleaves_the_recipes_round_by_round():
    plan = bench_speed.make_plan(bench_speed.parse_args(["--quick"]))
    assert plan.rounds >= 3 and plan.steps >= 5
    jobs = repeats.schedule(plan)
    order = [(j["round"], j["kind"], j.get("method"), j.get("recipe")) for j in jobs]
    one_round = [("train", "full", "notebook"), ("train", "full", "dialogtune"),
                 ("train", "lora", "notebook"), ("train", "lora", "dialogtune"), ("eval", None, None)]
    assert order == [(k, *job) for k in range(plan.rounds) for job in one_round]
    lora = repeats.schedule(bench_speed.make_plan(bench_speed.parse_args(["--lora-vs-full"])))
    assert [(j["round"], j["shape"], j["method"], j["label"]) for j in lora[:6]] == [
        (0, "small", "full", ""), (0, "small", "lora", "activation checkpointing off"), (0, "small", "lora", "activation checkpointing on"),
        (0, "base", "full", ""), (0, "base", "lora", "activation checkpointing off"), (0, "base", "lora", "activation checkpointing on")]
    assert {j["round"] for j in lora} == {0, 1, 2} and {j["recipe"] for j in lora} == {"dialogtune"}


def test_ratios_pair_rounds_and_take_the_median():
    # Round 2 ran on a host twice as fast for both recipes: paired, its ratio is unchanged.
    ours, notebook = [100.0, 200.0, 90.0], [20.0, 40.0, 30.0]
    assert repeats.paired_spread(ours, notebook) == {"median": 5.0, "min": 3.0, "max": 5.0, "values": [5.0, 5.0, 3.0]}
    assert repeats.spread([3.0, 1.0, 2.0, 10.0])["median"] == 2.5
    merged = repeats.median_result([{"tokens_per_s": 1.0, "steps": 5, "nested": {"x": 1.0}},
                                    {"tokens_per_s": 9.0, "steps": 5, "nested": {"x": 3.0}}])
    assert merged == {"tokens_per_s": 5.0, "steps": 5, "nested": {"x": 2.0}, "rounds": 2}
    with pytest.raises(ValueError, match="pair rounds"):
        repeats.paired_spread([1.0], [1.0, 2.0])


def test_host_fingerprint_has_cpu_flags_peaks_and_threads():
    text = "processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu sse avx avx2 fma avx512f amx_tile\n" \
           "processor\t: 1\nmodel name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu sse avx avx2 fma avx512f amx_tile\n"
    assert host.cpu_info(text) == ("Example CPU @ 2.0GHz", ["avx", "avx2", "fma", "avx512f", "amx_tile"])
    found = host.fingerprint("cpu", {"before": {"gflops": 250.0}, "after": {"gflops": 260.0}})
    assert found["threads"] == torch.get_num_threads() and found["cpu_model"]
    assert found["matmul_peak_gflops"] == {"before": 250.0, "after": 260.0}
    assert isinstance(found["cpu_flags"], list)
    line = host.describe(found)
    assert "before 250.0, after 260.0" in line and f"{found['threads']} threads" in line


def _run(train_ratio: float, lora_ratio: float, eval_ratio: float) -> dict:
    return {"train": [{"shape": "s", "method": "full", "ratio": train_ratio},
                      {"shape": "s", "method": "lora", "ratio": lora_ratio, "tokens_vs_full": 1.3}],
            "eval": [{"shape": "s", "ratio": eval_ratio}]}


def test_compare_runs_verdict_is_plus_minus_15_percent(tmp_path, capsys):
    a = _run(6.0, 4.0, 5.0)
    rows, ok = compare_runs.compare(a, _run(6.8, 3.5, 5.0))  # +13.3 %, -12.5 %: within
    assert ok and len(rows) == 4
    rows, ok = compare_runs.compare(a, _run(6.0, 4.0, 5.9))  # +18 % on evaluation: not within
    assert not ok and [r["name"] for r in rows if abs(r["diff"]) > 0.15] == ["eval s: dialogtune / notebook summaries/s"]
    assert not compare_runs.compare(a, {"train": a["train"]})[1]  # a ratio missing from one run is not a pass
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(_run(4.4, 4.0, 5.0)))  # -26.7 %
    assert compare_runs.main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    out = capsys.readouterr().out
    assert "-26.7%" in out and "NOT all within" in out


def test_step_profile_accounts_for_the_whole_step(capsys):
    shared_path("dialogsum", "dialogsum.dev.jsonl")
    spec = importlib.util.spec_from_file_location("profile_step", REPO / "bench" / "profile_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shares = module.main(["--shape", "tiny", "--batch-size", "2"])
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["matmul (linear layers, lm_head)"] > 0 and shares["dropout masks (bernoulli)"] > 0
    assert module.category("aten::addmm") == "matmul (linear layers, lm_head)"  # not "add"
    assert "MFU of this step" in capsys.readouterr().out


# ------------------------------------------------------------------ the optimisations change nothing


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    return AutoModelForSeq2SeqLM.from_pretrained(tiny_model).eval(), AutoTokenizer.from_pretrained(tiny_model)


def _prompts(n: int) -> list[str]:
    from tests.conftest import corpus_rows

    from dialogtune.prompts import PromptTemplate

    template = PromptTemplate()
    return [template.format(r["dialogue"]) for r in corpus_rows("test", n)]


def test_batched_length_sorted_generation_equals_one_at_a_time(tiny):
    from dialogtune.inference import generate, generation_config

    model, tokenizer = tiny
    prompts = _prompts(8)
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    assert len(set(lengths)) > 1  # the batch really is padded
    config = generation_config({"max_new_tokens": 12, "num_beams": 1, "do_sample": False}, tokenizer)
    batched = generate(model, tokenizer, prompts, config, batch_size=8, progress=False)
    alone = [generate(model, tokenizer, [p], config, batch_size=1, progress=False)[0] for p in prompts]
    # Padding changes the kernels' shapes, so the paths agree only up to rounding (see conftest).
    assert_same_text_where_decisive(batched, alone, [greedy_margin(model, tokenizer, p, 12) for p in prompts])


def test_merged_lora_generates_the_same_text(tiny):
    from peft import LoraConfig, get_peft_model

    from dialogtune.inference import generate, generation_config

    model, tokenizer = tiny
    # A fresh adapter is a no-op (B starts at zero); a non-zero init makes the comparison mean something.
    torch.manual_seed(0)
    lora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=32, target_modules=["q", "v"], init_lora_weights=False))
    lora.eval()
    prompts = _prompts(6)
    config = generation_config({"max_new_tokens": 12, "num_beams": 1, "do_sample": False}, tokenizer)
    unmerged = generate(lora, tokenizer, prompts, config, batch_size=3, progress=False)
    plain = generate(model, tokenizer, prompts, config, batch_size=3, progress=False)
    merged = generate(copy.deepcopy(lora).merge_and_unload(), tokenizer, prompts, config, batch_size=3, progress=False)
    assert unmerged != plain  # the adapter does change the output
    assert_same_text_where_decisive(merged, unmerged, [greedy_margin(lora, tokenizer, p, 12) for p in prompts])


def test_levers_only_times_each_lever_against_the_defaults_of_its_own_round():
    plan = bench_speed.make_plan(bench_speed.parse_args(["--levers-only"]))
    jobs = repeats.schedule(plan)
    assert plan.batch_size == 8 and plan.rounds >= 3 and not plan.eval_shapes
    levers = repeats.LEVERS + repeats.MORE_LEVERS
    per_round = 2 + len(levers)
    assert len(jobs) == plan.rounds * per_round and {j["recipe"] for j in jobs} == {"dialogtune"}
    for k in range(plan.rounds):
        this_round = [j for j in jobs if j["round"] == k]
        # the defaults come first in every round, so each lever's ratio pairs with a default of its round
        assert [(j["method"], j["label"]) for j in this_round[:2]] == [("full", ""), ("lora", "")]
        assert [j["label"] for j in this_round[2:]] == [label for _, label, _ in levers]
    labels = {label: settings for _, label, settings in levers}
    assert labels["1 thread"] == {"threads": 1}
    assert labels["optim adamw_torch (foreach, not fused)"]["training"]["optim"] == "adamw_torch"
