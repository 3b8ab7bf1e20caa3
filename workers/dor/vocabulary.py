"""The outlier vocabularies: every WordNet noun lemma (derived once and cached as a text file), the
whole words of CLIP's BPE tokenizer, or a user's word-list file; ``workers/vocabularies.py`` names
the built-in ones.

WordNet is found on its own: nltk's data (``corpora/wordnet`` or ``wordnet.zip``) first, then a
system WordNet 3.0 (Debian/Ubuntu ``wordnet-base`` + ``wordnet-sense-index``). nltk cannot read a
system folder in place (it only opens files under its data roots, it needs ``index.sense`` and a
``lexnames`` file that Debian does not ship), so the system files are copied into dor-bench's
cache, ``lexnames`` is written next to them, and that cache folder is added to nltk's data roots.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader
from nltk.data import PathPointer

from workers.errors import DorBenchError, NotFoundError
from workers.paths import atomic_write_bytes, cache_dir
from workers.vocabularies import VOCABULARIES

#: Bump when the derivation changes: the cached word list's file name carries it.
VOCABULARY_VERSION = "wordnet-nouns-v1"

#: WordNet's lexicographer files, numbered 00-44, as in the lexnames(5WN) man page.
LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}  # the man page's syntactic category codes

#: Files nltk's WordNet reader opens; ``lexnames`` is written by dor-bench when missing.
_REQUIRED_FILES = (
    "index.sense",
    *(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")),
    *(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")),
)
_OPTIONAL_FILES = ("cntlist.rev", "lexnames")  # sense counts; lexnames when the system has one

#: Where system WordNet installations live (after ``$WNSEARCHDIR`` and ``$WNHOME/dict``).
SYSTEM_WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/WordNet-3.0/dict", "/usr/local/share/wordnet")

#: The BPE merges open_clip ships (OpenAI's), and how many of them CLIP's tokenizer uses: its 49,408
#: tokens are 256 bytes, the same with ``</w>``, these merges and 2 special tokens.
CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_MERGES = 49408 - 2 * 256 - 2
#: Shorter word tokens are mostly function words and word endings ("of", "ed"): left out.
CLIP_BPE_MIN_LENGTH = 3

_HOW_TO_GET = (
    "with internet, run `python -m nltk.downloader wordnet`; on Debian/Ubuntu, run "
    "`apt-get install wordnet-base wordnet-sense-index`; or set WNSEARCHDIR to a WordNet 3.0 "
    "dict folder (with index.sense)."
)


def lexnames_text() -> str:
    """The 45-line ``lexnames`` file: ``NN<TAB>name<TAB>category``."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def vocabulary_path() -> Path:
    """The cached word list (one word a line)."""
    return cache_dir("vocabulary") / f"{VOCABULARY_VERSION}.txt"


def noun_vocabulary() -> list[str]:
    """All WordNet noun lemmas, underscores as spaces, unique case-insensitively, sorted.

    The first spelling met in WordNet's synset order wins (``dog`` and ``Dog`` are one word).
    Derived once (about 10 s) and read from the cache afterwards.
    """
    path = vocabulary_path()
    if path.is_file():
        return path.read_text(encoding="utf-8").splitlines()
    words = _derive_nouns(wordnet_reader())
    atomic_write_bytes(path, "".join(f"{w}\n" for w in words).encode("utf-8"))
    return words


def clip_bpe_vocabulary() -> list[str]:
    """The whole words of CLIP's BPE vocabulary: the merged tokens that end a word (``</w>``) and
    are ASCII letters only, at least ``CLIP_BPE_MIN_LENGTH`` long, lower-case, unique, sorted.

    Read from the BPE file in open_clip's package (found without importing open_clip), so it is
    there offline. A word-final token may also end longer words ("ing"): the tokenizer does not say.

    Raises:
        DorBenchError: open_clip or its BPE file is not installed.
    """
    found = importlib.util.find_spec("open_clip")
    folders = list(found.submodule_search_locations or []) if found is not None else []
    path = Path(folders[0]) / CLIP_BPE_FILE if folders else Path(CLIP_BPE_FILE)
    if not path.is_file():
        raise DorBenchError(
            f"The 'clip-bpe' vocabulary needs CLIP's BPE file '{CLIP_BPE_FILE}' from the open_clip package; "
            f"it is not there ({path}).",
            "install dor-bench's dependencies (open_clip_torch), or use dor.vocabulary: wordnet.",
        )
    merges = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[1 : 1 + CLIP_BPE_MERGES]
    words = set()
    for merge in merges:
        token = merge.replace(" ", "")
        if token.endswith("</w>"):
            word = token.removesuffix("</w>").lower()
            if len(word) >= CLIP_BPE_MIN_LENGTH and word.isascii() and word.isalpha():
                words.add(word)
    return sorted(words)


def vocabulary_words(vocabulary: str) -> list[str]:
    """The words of ``dor.vocabulary``: a built-in vocabulary's, else the word-list file's.

    Raises:
        DorBenchError: as ``read_word_file``, or a built-in vocabulary that cannot be read.
    """
    if vocabulary in VOCABULARIES:
        return VOCABULARIES.get(vocabulary).words()
    return read_word_file(vocabulary)


def read_word_file(path: str | os.PathLike[str]) -> list[str]:
    """The words of a DOR word-list file (one per line; blank lines skipped, words stripped).

    Raises:
        NotFoundError: the file is not there.
        DorBenchError: a folder, an unreadable or non-UTF-8 file, or one with no words; names the file.
    """
    path = Path(path).expanduser()
    what = f"The DOR word-list file '{path}'"
    fix = f"use a built-in vocabulary ({', '.join(VOCABULARIES)}) or a UTF-8 text file with one outlier word per line."
    if not path.exists():
        raise NotFoundError(f"{what} does not exist.", fix)
    if not path.is_file():
        raise DorBenchError(f"{what} is not a file.", fix)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DorBenchError(
            f"{what} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}).",
            "save it as UTF-8 text, one outlier word per line.",
        ) from None
    except OSError as err:
        raise DorBenchError(f"{what} cannot be read: {err.strerror or err}.", "make it readable, or " + fix) from None
    words = [line.strip() for line in text.splitlines() if line.strip()]
    if not words:
        raise DorBenchError(f"{what} has no words (it is empty or only blank lines).", fix)
    return words


def wordnet_reader() -> WordNetCorpusReader:
    """nltk's English WordNet reader over the WordNet found on this machine.

    Raises:
        DorBenchError: no WordNet anywhere, or an incomplete system WordNet; says how to get one.
    """
    with warnings.catch_warnings():  # "multilingual functions are not available": not needed
        warnings.simplefilter("ignore", UserWarning)
        return _EnglishWordNet(_wordnet_root(), None)


class _EnglishWordNet(WordNetCorpusReader):
    """English WordNet only: skips the mapping to other WordNet versions (multilingual data)."""

    def map_wn(self, version: str = "wordnet") -> None:
        # nltk reads index.sense twice here (about half the load time) for OMW lookups only.
        return None


def _derive_nouns(reader: WordNetCorpusReader) -> list[str]:
    first: dict[str, str] = {}
    for synset in reader.all_synsets("n"):
        for lemma in synset.lemmas():
            word = lemma.name().replace("_", " ")
            first.setdefault(word.casefold(), word)
    return sorted(first.values(), key=lambda w: (w.casefold(), w))


def _wordnet_root() -> PathPointer | str:
    found = _find_nltk_wordnet()
    if found is not None:
        return found
    local = cache_dir("nltk_data", "corpora", "wordnet")
    if not _is_complete(local):
        _copy_system_wordnet(_find_system_wordnet(), local)
    _allow_nltk_root(local.parent.parent)
    return str(local)


def _find_nltk_wordnet() -> PathPointer | None:
    """nltk's own WordNet (``corpora/wordnet`` folder or ``wordnet.zip``), if installed."""
    for resource in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
        try:
            return nltk.data.find(resource)
        except LookupError:
            continue
    return None


def _find_system_wordnet() -> Path:
    home = os.environ.get("WNHOME")
    candidates = [os.environ.get("WNSEARCHDIR"), home and f"{home}/dict", *SYSTEM_WORDNET_DIRS]
    for folder in (Path(c) for c in candidates if c):
        if (folder / "index.noun").is_file():
            missing = [f for f in _REQUIRED_FILES if not (folder / f).is_file()]
            if missing:
                raise DorBenchError(
                    f"The system WordNet in {folder} lacks {', '.join(missing)} "
                    "(index.sense comes in a separate Debian package).",
                    _HOW_TO_GET,
                )
            return folder
    searched = ", ".join(str(c) for c in candidates if c)
    raise DorBenchError(
        f"WordNet was not found: nltk has no 'corpora/wordnet' (searched {', '.join(nltk.data.path)}) "
        f"and there is no system WordNet (searched {searched}).",
        _HOW_TO_GET,
    )


def _is_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (*_REQUIRED_FILES, "lexnames"))


def _copy_system_wordnet(source: Path, target: Path) -> None:
    """Copy (never link: nltk refuses links) the system files and write ``lexnames`` when absent."""
    started = time.monotonic()
    for name in (*_REQUIRED_FILES, *_OPTIONAL_FILES):
        if (source / name).is_file():
            atomic_write_bytes(target / name, (source / name).read_bytes())
    if not (target / "lexnames").is_file():
        atomic_write_bytes(target / "lexnames", lexnames_text().encode("ascii"))
    print(f"copied the system WordNet from {source} to {target} in {time.monotonic() - started:.1f}s", file=sys.stderr)


def _allow_nltk_root(root: Path) -> None:
    """Add ``root`` to nltk's data roots: nltk only opens corpus files under those."""
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))
