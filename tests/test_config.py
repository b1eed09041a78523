import re
from typing import get_args, get_type_hints

import pytest
import yaml

from dialogtune.config import METHODS, TRAINED_METHODS, Config, DataConfig, EvaluationConfig, PromptConfig, RunConfig
from dialogtune.configio import for_method, load_config, parse_value
from dialogtune.errors import DialogtuneError


def test_cli_overrides_win_over_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"method": "full", "lora": {"r": 8}, "training": {"learning_rate": 1e-4}}))
    config = load_config(path, {"lora.r": 16, "method": "lora"})
    assert config.lora_args()["r"] == 16 and config.method == "lora"
    assert config.training_args()["learning_rate"] == 1e-4


def test_values_parse_like_yaml_1_2():
    assert parse_value("no") == "no"  # save_strategy: no, not False
    assert parse_value("1e-3") == 0.001 and parse_value("16") == 16 and parse_value("true") is True
    assert parse_value("[q, v]") == ["q", "v"]


def test_comma_list_of_lora_targets_is_a_list_not_a_regex():
    assert load_config(None, {"lora.target_modules": "q,k,v"}).lora_args()["target_modules"] == ["q", "k", "v"]


def test_aliases_map_onto_lora_config_fields():
    args = load_config(None, {"lora.alpha": 64, "lora.dropout": 0.1}).lora_args()
    assert args["lora_alpha"] == 64 and args["lora_dropout"] == 0.1


def test_every_problem_is_reported_at_once():
    with pytest.raises(DialogtuneError) as err:
        load_config(None, {"lora.rank": 4, "data.max_train_samples": "many", "training.learning_rat": 1})
    message = str(err.value)
    assert "lora.rank" in message and "data.max_train_samples" in message and "did you mean `learning_rate`" in message


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"lora.r": 0}, "`lora.r` is 0"),
        ({"training.learning_rate": -1e-3}, "must be positive"),
        ({"training.fp16": True}, "fp16"),
        ({"prompt.template": "no slot"}, "placeholder"),
        ({"method": "qlora"}, "choose one of original, full, lora"),
        ({"generation.max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_out_of_range_values_are_refused(overrides, fragment):
    with pytest.raises(DialogtuneError, match=fragment):
        load_config(None, overrides)


def test_activation_checkpointing_takes_auto_besides_true_and_false():
    for value in ("auto", True, False):
        assert load_config(None, {"training.activation_checkpointing": value}).training_args()["activation_checkpointing"] == value
    with pytest.raises(DialogtuneError, match=r"`training.activation_checkpointing` is 'maybe'; use true or false or auto"):
        load_config(None, {"training.activation_checkpointing": "maybe"})
    with pytest.raises(DialogtuneError, match=r"`training.bf16` is 'auto'; use true or false$"):
        load_config(None, {"training.bf16": "auto"})  # `auto` is ours for this one key only


def test_per_method_overrides_apply_only_to_that_method():
    config = load_config(None, {"run.overrides": {"lora": {"training.num_train_epochs": 5}}})
    assert for_method(config, "lora").training_args()["num_train_epochs"] == 5
    assert for_method(config, "full").training_args()["num_train_epochs"] == 1
    assert for_method(config, "lora").training_args()["learning_rate"] == 1e-3
    assert for_method(config, "full").training_args()["learning_rate"] == 3e-4


def test_value_problems_in_different_sections_are_reported_at_once():
    with pytest.raises(DialogtuneError) as err:
        load_config(None, {"lora.r": 0, "data.max_source_length": 0, "prompt.shots": -1, "evaluation.protocol": "best"})
    for fragment in ("`lora.r` is 0", "`data.max_source_length` is 0", "`prompt.shots` is -1", "`evaluation.protocol` is 'best'"):
        assert fragment in str(err.value)


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: DataConfig(max_target_length=0), "`data.max_target_length` is 0"),
        (lambda: PromptConfig(template="no slot"), "placeholder"),
        (lambda: EvaluationConfig(batch_size=0), "`evaluation.batch_size` is 0"),
        (lambda: RunConfig(methods=["qlora"]), "`run.methods` has 'qlora'"),
        (lambda: Config(lora={"r": 0}), "`lora.r` is 0"),
    ],
)
def test_each_section_checks_itself_when_built_in_code(build, fragment):
    with pytest.raises(DialogtuneError, match=re.escape(fragment)):
        build()


def test_trained_methods_are_the_methods_that_train():
    assert set(TRAINED_METHODS) == set(METHODS) - {"original"} and get_args(get_type_hints(Config)["method"]) == METHODS
