"""CTranslate2: export a full run, generate with it as the torch path does, evaluate and compare it, and refuse
what it cannot do (LoRA runs, torch folders, options it has no equivalent for)."""

import dataclasses

import pytest
import torch

from conftest import FAST_TRAINING, assert_same_text_where_decisive, corpus_rows, greedy_margin
from dialogtune import runs
from dialogtune.cli import main
from dialogtune.configio import load_config
from dialogtune.ct2 import CT2Summarizer, export, summarizer_for, translate_options
from dialogtune.errors import DialogtuneError
from dialogtune.evaluation import evaluate_run
from dialogtune.inference import Summarizer
from dialogtune.report import write_report
from dialogtune.train import train

pytest.importorskip("ctranslate2")


def _config(small_data, folder, method):
    # The bundled model, not conftest's random one: after a few steps that one says nothing at all, and
    # empty summaries would agree between any two engines.
    return load_config(None, {**FAST_TRAINING, "model": "builtin:tiny-t5", "data.dataset": str(small_data), "method": method,
                              "output": str(folder)})


@pytest.fixture(scope="module")
def full_run(small_data, tmp_path_factory):
    """A trained and evaluated full run, and its float32 export (made through the CLI)."""
    tmp = tmp_path_factory.mktemp("ct2")
    config = _config(small_data, tmp / "full", "full")
    run = train(config, config.output)
    evaluate_run(run.folder, progress=False)
    assert main(["export", str(run.folder), "--format", "ct2", "--quantization", "float32", "--output", str(tmp / "f32")]) == 0
    return run.folder, tmp / "f32"


@pytest.fixture(scope="module")
def both(full_run):
    folder, exported = full_run
    return Summarizer.from_run(folder), CT2Summarizer.from_folder(exported)


def _dialogues(n=8):
    return [r["dialogue"] for r in corpus_rows("test", n)]


def test_float32_export_generates_what_pytorch_generates(both):
    torch_path, ct2_path = both
    dialogues = _dialogues()
    expected, got = torch_path.summarize(dialogues), ct2_path.summarize(dialogues)
    assert any(expected)  # the trained model says something, so the comparison means something
    # Another engine, other kernels: texts must agree wherever greedy decoding was decisive (see conftest).
    limit = torch_path.settings.generation["max_new_tokens"]
    margins = [greedy_margin(torch_path.model, torch_path.tokenizer, p, limit) for p in torch_path.prompts(dialogues)]
    assert_same_text_where_decisive(got, expected, margins)


def test_float32_export_scores_every_token_as_pytorch_does(both):
    # transformers 5 says tie_word_embeddings=True for every T5; taken at its word, the converter scales the
    # output by d_model**-0.5. Greedy argmax survives that, but every probability (beam search, sampling,
    # penalties) changes: log-probabilities moved by ~6 nats on the bundled model. Float32 rounding moves
    # them by ~1e-6, so 1e-4 separates the two by orders of magnitude.
    torch_path, ct2_path = both
    tokenizer = torch_path.tokenizer
    prompts = torch_path.prompts(_dialogues(4))
    targets = [tokenizer.convert_ids_to_tokens(tokenizer(s)["input_ids"]) for s in torch_path.generate(prompts)]
    sources = [tokenizer.convert_ids_to_tokens(tokenizer(p)["input_ids"]) for p in prompts]
    scored = ct2_path.translator.score_batch(sources, [t[:-1] for t in targets])  # CTranslate2 adds </s> itself
    for prompt, target, result in zip(prompts, targets, scored, strict=True):
        labels = torch.tensor([tokenizer.convert_tokens_to_ids(target)])
        with torch.no_grad():
            logits = torch_path.model(**tokenizer(prompt, return_tensors="pt"), labels=labels).logits
        expected = torch.log_softmax(logits, -1)[0].gather(1, labels[0][:, None])[:, 0]
        assert torch.allclose(torch.tensor(result.log_probs), expected, atol=1e-4), (result.log_probs, expected)


@pytest.mark.parametrize("options", [
    {"num_beams": 3}, {"num_beams": 3, "length_penalty": 0.6}, {"max_new_tokens": 6, "min_new_tokens": 6},
    {"no_repeat_ngram_size": 2}, {"repetition_penalty": 1.5},
])
def test_generation_options_mean_the_same_in_both_engines(both, options):
    torch_path, ct2_path = both
    dialogues = _dialogues()
    expected, got = torch_path.summarize(dialogues, **options), ct2_path.summarize(dialogues, **options)
    # No per-step margin exists for beams and penalties; a near-tie that rounding flips may change one text.
    assert sum(a == b for a, b in zip(got, expected)) >= len(dialogues) - 1, (got, expected)


class _Spy:
    """A translator that records the tokens it is fed."""

    def __init__(self, real):
        self.real, self.seen, self.batch_limits = real, [], []
        self.num_translators = real.num_translators

    def translate_batch(self, tokens, **options):
        self.seen += tokens
        self.batch_limits.append(options.get("max_batch_size"))
        return self.real.translate_batch(tokens, **options)


def test_overlong_prompts_are_cut_as_the_torch_path_cuts_them(both):
    _, ct2_path = both
    line = "#Person1#: Could you tell me where the station is?\n#Person2#: Two streets down, by the bank.\n"
    prompt = ct2_path.prompts([line * 80])[0]
    limit = ct2_path.settings.max_source_length
    spy = _Spy(ct2_path.translator)
    dataclasses.replace(ct2_path, translator=spy).generate([prompt])
    fitted, cut = ct2_path.settings.template.fit(prompt, ct2_path.tokenizer, limit)
    # The instruction and the `Summary:` cue survive; the dialogue's end goes (PromptTemplate.fit).
    assert cut and len(spy.seen[0]) == limit == len(fitted)
    assert spy.seen[0] == ct2_path.tokenizer.convert_ids_to_tokens(fitted)


def test_export_is_a_run_folder_that_describes_itself(full_run):
    source, exported = full_run
    run, original = runs.read_run(exported), runs.read_run(source)
    assert run.method == "full" and run.metadata["backend"] == "ct2" and run.metadata["quantization"] == "float32"
    assert run.metadata["source_run"] == str(source.resolve()) and run.base_model == original.base_model
    assert run.prompt == original.prompt and run.config.generation_args() == original.config.generation_args()
    # The report's cost columns show what training the model cost, not 0 for the conversion.
    assert run.metadata["train_seconds"] == original.metadata["train_seconds"] > 0
    assert run.metadata["trainable_params"] == original.metadata["trainable_params"]
    assert (exported / "model.bin").is_file() and (exported / "tokenizer.json").is_file()
    assert not list(exported.glob("*.safetensors"))


def test_loading_a_translator_leaves_torchs_thread_count_alone(full_run):
    # CTranslate2 shares torch's OpenMP runtime; creating a translator with intra_threads=1 used to leave every
    # later torch op in the process on one thread.
    _, exported = full_run
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        CT2Summarizer.from_folder(exported, workers=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_workers_each_take_part_of_every_batch_and_change_nothing(full_run, both):
    _, exported = full_run
    torch_path, _ = both
    one, two = CT2Summarizer.from_folder(exported, workers=1), CT2Summarizer.from_folder(exported, workers=2)
    assert (one.translator.num_translators, two.translator.num_translators) == (1, 2)
    dialogues = _dialogues(7)
    spy = _Spy(two.translator)
    split, whole = dataclasses.replace(two, translator=spy).summarize(dialogues), one.summarize(dialogues)
    assert spy.batch_limits == [4]  # one batch of 7, as two parts decoded at once
    # Parts pad to their own longest prompt, so other matrix shapes and kernels: texts must agree wherever greedy
    # decoding was decisive (see conftest; identical on the host where this was written).
    limit = torch_path.settings.generation["max_new_tokens"]
    margins = [greedy_margin(torch_path.model, torch_path.tokenizer, p, limit) for p in torch_path.prompts(dialogues)]
    assert_same_text_where_decisive(split, whole, margins)


def test_int8_export_runs_and_is_smaller(full_run, tmp_path):
    source, f32 = full_run
    run = export(source, tmp_path / "int8", "int8")
    assert run.metadata["quantization"] == "int8"
    assert (tmp_path / "int8" / "model.bin").stat().st_size < 0.6 * (f32 / "model.bin").stat().st_size
    texts = CT2Summarizer.from_folder(run.folder).summarize(_dialogues(4))
    assert len(texts) == 4 and any(texts)


def test_lora_run_is_refused_with_the_merge_command(small_data, tmp_path, capsys):
    lora = runs.RunFolder.create(tmp_path / "lora", _config(small_data, tmp_path / "lora", "lora"))
    with pytest.raises(DialogtuneError, match="no LoRA support; merge it first: dialogtune merge"):
        export(lora.folder, tmp_path / "out")
    assert main(["export", str(lora.folder), "--format", "ct2", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "merge it first" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_export_replaces_an_earlier_export_only_with_overwrite(full_run, small_data, tmp_path):
    source, _ = full_run
    export(source, tmp_path / "out", "int8")
    with pytest.raises(DialogtuneError, match="already holds a run"):
        export(source, tmp_path / "out", "float32")
    assert runs.read_run(tmp_path / "out").metadata["quantization"] == "int8"  # untouched by the refusal
    export(source, tmp_path / "out", "float32", overwrite=True)
    assert runs.read_run(tmp_path / "out").metadata["quantization"] == "float32"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind
    untrained = runs.RunFolder.create(tmp_path / "untrained", _config(small_data, tmp_path / "untrained", "full"))
    with pytest.raises(DialogtuneError, match="no saved model"):
        export(untrained.folder, tmp_path / "out2")


def test_each_backend_refuses_the_other_kind_of_folder(full_run):
    source, exported = full_run
    with pytest.raises(DialogtuneError, match="dialogtune export"):
        summarizer_for(runs.read_run(source), "ct2")
    with pytest.raises(DialogtuneError, match="--backend ct2"):
        summarizer_for(runs.read_run(exported), "torch")
    assert isinstance(summarizer_for(runs.read_run(exported)), CT2Summarizer)  # the folder's own backend


def test_unsupported_generation_options_are_refused():
    with pytest.raises(DialogtuneError, match="`early_stopping`.*--backend torch"):
        translate_options({"max_new_tokens": 5, "early_stopping": True})
    with pytest.raises(DialogtuneError, match="num_beams 1"):
        translate_options({"do_sample": True, "num_beams": 2})
    assert translate_options({"max_new_tokens": 5, "num_beams": 2, "top_k": 3}) == {
        "beam_size": 2, "max_decoding_length": 5, "min_decoding_length": 0, "max_input_length": 0}
    sampled = translate_options({"do_sample": True, "temperature": 0.7})
    assert sampled["sampling_topk"] == 50 and sampled["sampling_temperature"] == 0.7


def test_evaluate_and_compare_an_export_against_its_source(full_run, tmp_path, capsys):
    source, exported = full_run
    assert main(["evaluate", str(exported)]) == 0
    run = runs.read_run(exported)
    assert run.finished and len(run.predictions()) == 8
    report = write_report([source, exported], tmp_path)
    (pair,) = report["comparisons"]
    assert (pair["a"], pair["b"]) == (exported.name, source.name)
    assert [(r["backend"], r["quantization"]) for r in report["runs"]] == [("torch", None), ("ct2", "float32")]
    markdown = (tmp_path / "report.md").read_text()
    assert "| full (torch) |" in markdown and "| full (ct2 float32) |" in markdown
    assert "full (ct2 float32)" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "{source}", "--backend", "ct2"], "dialogtune export"),
    (["evaluate", "{exported}", "--backend", "torch"], "--backend ct2"),
    (["summarize", "#Person1#: Hi.", "--run", "{source}", "--backend", "ct2"], "dialogtune export"),
    (["export", "{exported}", "--format", "ct2", "--output", "{tmp}/again"], "already a CTranslate2 export"),
    (["export", "{source}", "--format", "ct2", "--output", "{tmp}/busy"], "other files in it"),
    (["export", "{source}", "--format", "ct2", "--quantization", "int4", "--output", "{tmp}/x"], "int4"),
    (["export", "{source}", "--format", "onnx", "--output", "{tmp}/x"], "onnx"),
])
def test_cli_errors_are_one_line_and_exit_2(full_run, tmp_path, capsys, argv, message):
    source, exported = full_run
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    args = [a.format(source=source, exported=exported, tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"


def test_summarize_reads_the_backend_from_the_folder(full_run, capsys, monkeypatch):
    _, exported = full_run
    loaded = []
    real = CT2Summarizer.from_folder.__func__
    monkeypatch.setattr(CT2Summarizer, "from_folder", classmethod(lambda cls, folder: loaded.append(folder) or real(cls, folder)))
    dialogue = _dialogues(1)[0]
    assert main(["summarize", dialogue, "--run", str(exported)]) == 0
    assert [str(f) for f in loaded] == [str(exported)]
    assert capsys.readouterr().out.strip() == CT2Summarizer.from_folder(exported).summarize([dialogue])[0]
