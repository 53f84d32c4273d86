"""The fenced code blocks of the documentation, as a user copies them.

:func:`doc_blocks` reads every ```` ``` ```` block of the README files and ``docs/``;
tests/test_docs_examples.py accounts for each (run there, or by the test it names).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "Block", "addressed", "doc_blocks", "doc_files", "json_values", "like"]

ROOT = Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language tag and its text."""

    path: str  # relative to the repository, e.g. "docs/protocol.md"
    lang: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.splitlines()[0] if self.text else ""

    def __str__(self) -> str:
        return f"{self.path}: ```{self.lang} block starting {self.first_line[:60]!r}"


def doc_files() -> list[Path]:
    """The documentation a user reads: the READMEs and every page of docs/."""
    readmes = [ROOT / "README.md", *sorted(ROOT.glob("*/README.md"))]
    readmes += sorted(ROOT.glob("clients/*/README.md"))
    return [path for path in readmes if path.is_file()] + sorted((ROOT / "docs").glob("*.md"))


def doc_blocks() -> Iterator[Block]:
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            yield Block(str(path.relative_to(ROOT)), match.group(1), match.group(2))


def json_values(text: str) -> list[Any]:
    """The JSON values written one after another in ``text`` (a block, or curl output).

    An elided part written ``, …`` inside an object or array (the docs' way to say
    "and more") is dropped first; ``…`` inside a string stays.
    """
    text = re.sub(r",\s*…(?=\s*[}\]])", "", text)
    decoder = json.JSONDecoder()
    values: list[Any] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return values
        value, index = decoder.raw_decode(text, index)
        values.append(value)


def like(pattern: str, actual: str) -> bool:
    """``actual`` reads as ``pattern``, where each ``…`` of the pattern stands for anything."""
    parts = (re.escape(part) for part in pattern.split("…"))
    return re.fullmatch(".*?".join(parts), actual, re.S) is not None


def addressed(text: str, base_url: str) -> str:
    """A docs example aimed at a test hub: ``localhost:3000`` (with or without
    ``http://``) becomes ``base_url``'s address."""
    return text.replace("http://localhost:3000", base_url).replace(
        "localhost:3000", base_url.removeprefix("http://")
    )
