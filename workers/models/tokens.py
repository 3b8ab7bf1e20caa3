"""A tokenizer that keeps each prompt's token ids, so a training step does not tokenise again.

Every step encodes the class prompts (and, with DOR, B outlier prompts) through the text tower.
open_clip's tokenizer cleans each text with ftfy and a regex before its BPE: about 0.1 ms a
prompt on one core, so 100 ms a step for CoOp+DOR at 500 base classes (1,000 prompts), which
is more than the step's own GPU work. The ids of a text never change, so they are computed once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

#: Texts whose ids are kept: every class prompt and a full outlier pool (K = 5,000) fit, at
#: 77 int64 ids a text (about 20 MB); building a pool over a whole vocabulary streams past it.
KEPT_TEXTS = 32_768


class PromptTokenizer:
    """``tokenize(texts) -> [len(texts), L]`` token ids on the CPU, equal to the wrapped
    tokenizer's (open_clip's), with the ids of the last ``kept`` distinct texts remembered."""

    def __init__(self, tokenize: Callable[[list[str]], torch.Tensor], kept: int = KEPT_TEXTS):
        self._tokenize, self._kept = tokenize, kept
        self._ids: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return self._tokenize([])
        fresh = [text for text in dict.fromkeys(texts) if text not in self._ids]
        if fresh:
            for text, row in zip(fresh, self._tokenize(fresh)):
                self._ids[text] = row.clone()  # not a view that keeps the whole fresh batch alive
        rows = []
        for text in texts:
            self._ids.move_to_end(text)
            rows.append(self._ids[text])
        while len(self._ids) > self._kept:
            self._ids.popitem(last=False)
        return torch.stack(rows)
