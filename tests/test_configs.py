"""Every shipped recipe parses, validates against the libraries' own classes, and opens with its command."""

from pathlib import Path

import pytest

from conftest import REPO
from dialogtune.configio import for_method, load_config
from dialogtune.inference import generation_config
from dialogtune.train import training_arguments

RECIPES = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "dialogtune" / "assets").glob("*.yaml"))


def test_recipes_exist_for_every_size_and_method():
    names = {p.stem for p in RECIPES}
    for size in ("small", "base", "large"):
        assert {f"flan-t5-{size}-full", f"flan-t5-{size}-lora", f"flan-t5-{size}"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_opens_with_its_command(path: Path, tmp_path):
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# dialogtune ")
    assert f"configs/{path.name}" in first or (path.parent.name == "assets" and first.startswith(f"# dialogtune {path.stem}"))
    if first.startswith("# dialogtune sweep"):  # a recipe plus a grid: every point must be a valid config
        from dialogtune.sweep import plan_points, read_sweep

        _, points = plan_points(*read_sweep(path))
        config = points[0].config
    else:
        config = load_config(path)
    methods = config.run.methods if first.startswith(("# dialogtune run", "# dialogtune demo")) else [config.method]
    for method in methods:
        resolved = for_method(config, method)
        if method != "original":
            args = training_arguments(resolved, tmp_path)
            assert args.learning_rate > 0 and args.train_sampling_strategy == "group_by_length"
        assert resolved.generation_args()["max_new_tokens"] > 20, "the library default of 20 cuts summaries short"
    class _Tok:
        pad_token_id, eos_token_id = 0, 1
    generation_config(config.generation_args(), _Tok())
    if "lora" in methods:
        from peft import LoraConfig

        LoraConfig(**for_method(config, "lora").lora_args())
