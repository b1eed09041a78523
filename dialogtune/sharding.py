"""Generation spread over the processes of a torchrun / accelerate launch: each rank summarises its shard of
the dialogues, and every rank gets all the predictions back in the original order.

The shard is made of whole batches of the single-process batching (`inference.batches`: longest prompts
first): rank r takes batches r, r+W, r+2W, ... Handing those prompts to the summarizer in their original
relative order makes it form exactly those batches again (a subset of a sorted order stays sorted, and only
the last batch can be short), so every dialogue is generated with the same batch-mates and padding as in
one process, and the predictions are identical to a single-process run's, not merely close.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from dialogtune import ranks
from dialogtune.inference import batches

log = logging.getLogger(__name__)


def generate(
    summarizer: Any,
    prompts: list[str],
    adapter: str | None = None,
    *,
    progress: bool = False,
    done: dict[int, str] | None = None,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    **options: Any,
) -> list[str]:
    """`summarizer.generate(prompts, adapter, ...)` (a torch or CTranslate2 summarizer) over every process.

    Every rank must call it with the same prompts. `done` (by prompt index) holds outputs already made;
    `on_batch` is told rank 0's own batches only (with prompt indices), since rank 0 alone writes files.
    `options` go to `summarizer.generate` (`template=` for the torch summarizer, generation settings).
    """
    if ranks.world_size() == 1:
        return summarizer.generate(prompts, adapter, progress=progress, done=done, on_batch=on_batch, **options)
    settings = summarizer.adapters.get(adapter, summarizer.settings) if adapter else summarizer.settings
    template = options.get("template") or settings.template  # the one the summarizer fits prompts with
    lengths = [len(template.fit(p, summarizer.tokenizer, settings.max_source_length)[0]) for p in prompts]
    order = batches(lengths, settings.batch_size)
    mine = ranks.shard(order)
    log.info("rank %d of %d generates %d of %d prompts (%d of %d batches)", ranks.rank(), ranks.world_size(), len(mine),
             len(prompts), len(order[ranks.rank()::ranks.world_size()]), len(order))
    local_done = {j: done[i] for j, i in enumerate(mine) if done and i in done}

    def report(indices: list[int], texts: list[str]) -> None:
        on_batch([mine[j] for j in indices], texts)  # type: ignore[misc]

    texts = summarizer.generate(
        [prompts[i] for i in mine], adapter, progress=progress and ranks.is_main(), done=local_done,
        on_batch=report if on_batch is not None and ranks.is_main() else None, **options,
    )
    outputs = [""] * len(prompts)
    for indices, part in ranks.all_gather((mine, texts)):
        for i, text in zip(indices, part, strict=True):
            outputs[i] = text
    return outputs
