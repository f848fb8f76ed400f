"""Chunking: cut documents into overlapping pieces a retriever can return (lab 15 §3, §4).

Why a module: every retriever of lab 15 searches chunks, not documents. A splitter cuts the text
at a separator, then *merges* the pieces greedily into chunks of at most ``chunk_size``
characters, each starting with the last pieces of the previous one that fit in ``chunk_overlap``.
`fixed_size_chunks` equals ``langchain_text_splitters.CharacterTextSplitter``; `recursive_chunks`
(paragraphs, then lines, words, characters) equals ``RecursiveCharacterTextSplitter(...).split_text``.
Built in lab 15 §3, checked against the library in §4, used for the corpus in §5.
"""
from __future__ import annotations

from ..errors import LabkitError
from .checks import _check_text, _positive_int

__all__ = ["fixed_size_chunks", "recursive_chunks"]


def _check_chunk_sizes(chunk_size, chunk_overlap) -> None:
    _positive_int(chunk_size, "chunk_size")
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or chunk_overlap < 0:
        raise LabkitError(f"chunk_overlap must be an integer >= 0, got {chunk_overlap!r}")
    if chunk_overlap > chunk_size:
        raise LabkitError(f"chunk_overlap ({chunk_overlap}) is larger than chunk_size ({chunk_size}); "
                          "pass an overlap smaller than the chunk")


def _merge(pieces: list[str], separator: str, chunk_size: int, chunk_overlap: int) -> list[str]:
    """Greedily join pieces (with ``separator`` between them) into chunks of <= chunk_size.

    ``window`` is the chunk being built and ``total`` its length. When the next piece does not
    fit, the window is emitted, then its first pieces are dropped until what is left is at most
    ``chunk_overlap`` long *and* leaves room for the next piece: that tail starts the next chunk.
    Each chunk is stripped of surrounding whitespace; empty chunks are dropped.
    """
    sep = len(separator)
    chunks, window, total = [], [], 0
    for piece in pieces:
        n = len(piece)
        if window and total + n + sep > chunk_size:
            chunk = separator.join(window).strip()
            if chunk:
                chunks.append(chunk)
            while total > chunk_overlap or (total > 0 and total + n + (sep if window else 0) > chunk_size):
                total -= len(window[0]) + (sep if len(window) > 1 else 0)
                window.pop(0)
        window.append(piece)
        total += n + (sep if len(window) > 1 else 0)
    chunk = separator.join(window).strip()
    if chunk:
        chunks.append(chunk)
    return chunks


def fixed_size_chunks(text: str, chunk_size: int, chunk_overlap: int, separator: str = "\n\n") -> list[str]:
    """Split ``text`` at ``separator`` and merge the pieces into chunks of at most ``chunk_size``.

    Equals ``CharacterTextSplitter(separator=separator, chunk_size=..., chunk_overlap=...)
    .split_text(text)`` (its defaults: the separator is a literal, not kept in the pieces but put
    back between them; chunks stripped). ``separator=""`` splits into characters. A piece longer
    than ``chunk_size`` becomes a chunk of its own, longer than asked.
    """
    _check_text(text)
    _check_text(separator, "separator")
    _check_chunk_sizes(chunk_size, chunk_overlap)
    pieces = text.split(separator) if separator else list(text)
    return _merge([p for p in pieces if p], separator, chunk_size, chunk_overlap)


def _split_keeping_separator(text: str, separator: str) -> list[str]:
    """``"a b c"`` at ``" "`` -> ``["a", " b", " c"]``: each separator starts the piece after it."""
    if not separator:
        return list(text)
    first, *rest = text.split(separator)
    return [p for p in [first] + [separator + p for p in rest] if p]


def recursive_chunks(text: str, chunk_size: int, chunk_overlap: int, separators: list[str] | None = None) -> list[str]:
    """Split at the first separator that occurs in ``text``; re-split too-long pieces with the rest.

    Equals ``RecursiveCharacterTextSplitter(separators=separators, chunk_size=...,
    chunk_overlap=...).split_text(text)`` with its defaults: separators ``["\\n\\n", "\\n", " ",
    ""]`` taken literally, each kept at the start of the piece that follows it (so pieces are
    merged with nothing between them), chunks stripped. A piece of ``chunk_size`` or more that
    no later separator can cut is emitted as it is -- *not* stripped, as LangChain does.
    """
    _check_text(text)
    _check_chunk_sizes(chunk_size, chunk_overlap)
    if separators is not None and (not isinstance(separators, (list, tuple)) or
                                   not all(isinstance(s, str) for s in separators)):
        raise LabkitError(f"separators must be a list of str (or None for paragraphs, lines, words, "
                          f"characters), got {separators!r}")
    return _recursive(text, list(separators or ["\n\n", "\n", " ", ""]), chunk_size, chunk_overlap)


def _recursive(text: str, separators: list[str], chunk_size: int, chunk_overlap: int) -> list[str]:
    separator, rest = separators[-1], []
    for i, s in enumerate(separators):
        if s == "":                      # characters: always possible, nothing finer to try
            separator = s
            break
        if s in text:
            separator, rest = s, separators[i + 1:]
            break
    chunks, short = [], []
    for piece in _split_keeping_separator(text, separator):
        if len(piece) < chunk_size:
            short.append(piece)
            continue
        if short:                        # flush the short pieces gathered so far
            chunks += _merge(short, "", chunk_size, chunk_overlap)
            short = []
        if rest:
            chunks += _recursive(piece, rest, chunk_size, chunk_overlap)
        else:
            chunks.append(piece)         # nothing left to cut with: kept whole (and unstripped)
    if short:
        chunks += _merge(short, "", chunk_size, chunk_overlap)
    return chunks
