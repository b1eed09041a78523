import pytest
import yaml

from dialogtune.config import for_method, load_config, parse_value
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


def test_per_method_overrides_apply_only_to_that_method():
    config = load_config(None, {"run.overrides": {"lora": {"training.num_train_epochs": 5}}})
    assert for_method(config, "lora").training_args()["num_train_epochs"] == 5
    assert for_method(config, "full").training_args()["num_train_epochs"] == 1
    assert for_method(config, "lora").training_args()["learning_rate"] == 1e-3
    assert for_method(config, "full").training_args()["learning_rate"] == 3e-4
