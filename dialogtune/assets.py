"""The one resolver of reserved `builtin:` names: the bundled model and corpus that ship with the package.

`:` cannot appear in a hub id, so a `builtin:` name never collides with a model or dataset on the hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dialogtune.errors import DialogtuneError

ASSETS = Path(__file__).parent / "assets"
PREFIX = "builtin:"
BUILTINS: dict[str, dict[str, Path]] = {
    "model": {"builtin:tiny-t5": ASSETS / "tiny-t5"},
    "dataset": {
        "builtin:dialogs": ASSETS / "dialogs",
        # The tiny model's pre-training tasks on the same dialogues (scripts/build_task_data.py).
        "builtin:slot_qa": ASSETS / "dialogs" / "slot_qa",
        "builtin:details": ASSETS / "dialogs" / "details",
    },
}
DEMO_RECIPE = ASSETS / "demo.yaml"


def resolve(name: str, kind: Literal["model", "dataset"]) -> str:
    """Map a reserved `builtin:` name to its bundled folder; leave hub ids and paths alone."""
    if not name.startswith(PREFIX):
        return name
    known = BUILTINS[kind]
    if name not in known:
        raise DialogtuneError(f"unknown built-in {kind} `{name}`; the bundled ones are: {', '.join(known)}")
    return str(known[name])
