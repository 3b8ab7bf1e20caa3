"""The built-in DOR outlier vocabularies by name. Torch-free: settings files and ``dor-bench trial``
flags are checked against it before any worker starts.

``dor.vocabulary`` is one of these names or the path of a word-list file (one word per line); a
name wins over a file of the same name (write ``./wordnet`` for such a file).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from workers.errors import did_you_mean
from workers.registry import Registry


@dataclass(frozen=True)
class VocabularyCard:
    name: str
    loader: str  # the function of workers.dor.vocabulary that returns the words

    def words(self) -> list[str]:
        """The vocabulary's words (imports ``workers.dor``, and with it torch)."""
        load = getattr(importlib.import_module("workers.dor.vocabulary"), self.loader)
        words: list[str] = load()
        return words


VOCABULARIES: Registry[VocabularyCard] = Registry("DOR vocabulary")

for _card in (
    VocabularyCard("wordnet", "noun_vocabulary"),  # every WordNet noun lemma (about 118,000)
    VocabularyCard("clip-bpe", "clip_bpe_vocabulary"),  # CLIP's BPE whole words, 3 letters or more (32,230)
):
    VOCABULARIES.register(_card.name)(_card)


def vocabulary_problem(vocabulary: str) -> str | None:
    """Why ``vocabulary`` is neither a built-in vocabulary nor an existing file; None when it is one."""
    if vocabulary in VOCABULARIES or Path(vocabulary).expanduser().is_file():
        return None
    names = VOCABULARIES.names()
    return (
        f"unknown vocabulary '{vocabulary}': it is not a built-in vocabulary, and the word-list file "
        f"'{vocabulary}' does not exist.{did_you_mean(Path(vocabulary).name, names)} Use one of "
        f"{', '.join(names)}, or a UTF-8 text file with one outlier word per line"
    )
