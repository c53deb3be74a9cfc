"""The docs stand alone: README.md and docs/*.md cite nothing outside the repository; every
link, heading and repository path they name exists; every command they show is one the
program takes (its own argument parser says so)."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
OUTSIDE = ("../", "/work/", "DESIGN.md", "STYLE.md", "original-report")
"""What only a file outside the repository could be: a parent directory, the machine it was
written on, or the notes it was written from."""
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:docs|tests|pyrostore|benchmarks|verifier)/[\w/.-]*\w)")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
SHELL_BLOCK = re.compile(r"^\s*(```|~~~)\s*(sh|bash|shell|console)\s*$")
PLACEHOLDER = re.compile(r"[|<>\[\]…]|\.\.\.")
"""A command written with alternatives or elisions is a pattern, not one to parse."""
EXAMPLE_VALUES = {"N": "1", "S": "msgpack"}
"""Placeholders for a value, and a value the program takes in their place."""
PROGRAMS = {"pyrostore": ("pyrostore.cli", "build_parser"), "bench.py": ("bench", "build_parser"),
            "verify.py": ("verify", "parser")}
"""Each program a doc may show, and the module and function that build its parser."""
TEXT_SUFFIXES = {".py", ".md", ".toml", ".sh", ".cfg", ".txt", ".csv", ""}
"""Tracked files read for citations (``""``: Makefile and the like)."""


def prose(path: Path) -> list[tuple[int, str]]:
    """The lines of a markdown file outside fenced code blocks, numbered from 1."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces made hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link may name in ``path`` (a repeated heading's gets -1, -2, ...)."""
    counts: dict[str, int] = {}
    found = set()
    for _, line in prose(path):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            found.add(f"{base}-{counts[base]}" if base in counts else base)
            counts[base] = counts.get(base, 0) + 1
    return found


def links(doc: Path) -> list[tuple[int, str]]:
    """(line, target) of each link in the prose; a link's text may span lines."""
    numbered = dict(prose(doc))
    last = max(numbered, default=0)
    text = "\n".join(numbered.get(n, "") for n in range(1, last + 1))
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1))
            for match in LINK.finditer(text)]


def outside_citations(doc: Path) -> list[tuple[int, str]]:
    """(line, what) of each citation of something outside the repository."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    return [(n, word) for n, line in enumerate(lines, start=1) for word in OUTSIDE
            if word in line]


def broken_links(doc: Path, root: Path = ROOT) -> list[tuple[int, str, str]]:
    """(line, link, why) of each relative link that leads to no file, or no heading, here."""
    broken = []
    for number, target in links(doc):
        if SCHEME.match(target):
            continue
        name, _, anchor = target.partition("#")
        file = (doc.parent / name).resolve() if name else doc
        if not file.exists() or root not in file.parents:
            broken.append((number, target, "no such file in the repository"))
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append((number, target, "no such heading"))
    return broken


def missing_paths(doc: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, path) of each repository path named in the prose that does not exist."""
    return [(number, path) for number, line in prose(doc)
            for path in REPO_PATH.findall(line) if not (root / path).exists()]


def parser_of(program: str) -> argparse.ArgumentParser:
    """The argument parser of ``pyrostore``, bench.py or verify.py, as the program builds it."""
    module, function = PROGRAMS[program]
    build: Callable[[], argparse.ArgumentParser] = getattr(importlib.import_module(module),
                                                           function)
    return build()


def commands(doc: Path) -> list[tuple[int, str, list[str]]]:
    """(line, program, arguments) of each command of the store's own programs the doc shows:
    lines of its shell blocks, and code spans in its prose."""
    found, fence = [], ""
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith(("```", "~~~")):
            fence = "" if fence else ("shell" if SHELL_BLOCK.match(line) else "other")
            continue
        if fence == "shell":
            spans = [line]
        elif fence == "other":
            spans = []
        else:
            spans = re.findall(r"`([^`]+)`", line)
        for span in spans:
            command = command_of(span)
            if command:
                found.append((number, *command))
    return found


def command_of(text: str) -> tuple[str, list[str]] | None:
    """The program and arguments ``text`` runs, if it runs ``pyrostore``, bench.py or verify.py
    and is not a pattern; ``None`` otherwise."""
    try:
        words = shlex.split(re.sub(r"^\$\s+", "", text.strip()), comments=True)
    except ValueError:
        return None
    while words and (re.match(r"^[A-Z_]+=", words[0]) or words[0] == "sudo"):
        words = words[1:]
    if words and words[0].rsplit("/", 1)[-1] in ("python", "python3"):
        words = words[1:]
    if words[:2] == ["-m", "pyrostore"]:
        words = ["pyrostore", *words[2:]]
    program = words[0].rsplit("/", 1)[-1] if words else ""
    if program not in PROGRAMS or len(words) < 2:
        return None
    if any(PLACEHOLDER.search(word) for word in words):
        return None
    return program, [EXAMPLE_VALUES.get(word, word) for word in words[1:]]


def relative(doc: Path) -> str:
    """A doc's path in the repository (the test's id)."""
    return str(doc.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=relative)
def test_a_doc_cites_nothing_outside_the_repository(doc: Path) -> None:
    found = outside_citations(doc)
    assert not found, f"{relative(doc)} cites outside the repository at (line, what): {found}"


@pytest.mark.parametrize("doc", DOCS, ids=relative)
def test_every_relative_link_of_a_doc_leads_to_a_file_and_heading(doc: Path) -> None:
    broken = broken_links(doc)
    assert not broken, f"{relative(doc)}: broken links (line, link, why): {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=relative)
def test_every_repository_path_a_doc_names_exists(doc: Path) -> None:
    missing = missing_paths(doc)
    assert not missing, f"{relative(doc)} names paths that do not exist (line, path): {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=relative)
def test_every_command_a_doc_shows_is_one_its_program_takes(
        doc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused = []
    for number, program, arguments in commands(doc):
        try:
            parser_of(program).parse_args(arguments)
        except SystemExit as exc:
            if exc.code:
                refused.append((number, f"{program} {shlex.join(arguments)}",
                                capsys.readouterr().err.strip().splitlines()[-1:]))
    assert not refused, f"{relative(doc)}: commands the CLI refuses (line, command, why): {refused}"


def test_no_tracked_file_cites_the_notes_it_was_written_from() -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    this = relative(Path(__file__))
    found = []
    for name in listed.stdout.splitlines():
        path = ROOT / name
        if name == this or path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [(name, word) for word in OUTSIDE[1:] if word in text]
    assert not found, f"files citing what lies outside the repository: {found}"


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """Each check above fails on a doc that breaks it, and passes what it should."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").touch()
    (tmp_path / "other.md").write_text("# Other\n", encoding="utf-8")
    doc = tmp_path / "bad.md"
    doc.write_text(
        "# Title\n\n## Two words\n\n## Two words\n\n"
        "see [a](../shared/DESIGN.md), [b](missing.md), [c](#two-words-1), [d](#nowhere),\n"
        "[e](other.md#other), [f](other.md#title), [g](https://example.org/x.md), [i\n"
        "j](nothere.md) pyrostore/no_such_module.py and `tests/conftest.py`\n"
        "```\n# not a heading\n[h](gone.md) docs/gone.md\n```\n",
        encoding="utf-8")
    assert anchors(doc) == {"title", "two-words", "two-words-1"}
    assert slug("Before → after") == "before--after"
    assert slug("Atomic buys: the catalog's outbox (outbox.py)") == \
        "atomic-buys-the-catalogs-outbox-outboxpy"
    assert outside_citations(doc) == [(7, "../"), (7, "DESIGN.md")]
    assert [link for _, link, _ in broken_links(doc, tmp_path)] == \
        ["../shared/DESIGN.md", "missing.md", "#nowhere", "other.md#title", "nothere.md"]
    assert missing_paths(doc, tmp_path) == [(9, "pyrostore/no_such_module.py")]
    shown = tmp_path / "commands.md"
    shown.write_text(
        "Run `pyrostore up --catalogs 3` or `pyrostore frontend --id N`, not `pyrostore a|b`.\n"
        "```sh\nPYROSTORE_LEASE=2 .venv/bin/python -m pyrostore lookup 1  # a book\n"
        "python bench.py --only tiers\n```\n```\npyrostore not-a-shell-block\n```\n",
        encoding="utf-8")
    assert commands(shown) == [(1, "pyrostore", ["up", "--catalogs", "3"]),
                               (1, "pyrostore", ["frontend", "--id", "1"]),
                               (3, "pyrostore", ["lookup", "1"]),
                               (4, "bench.py", ["--only", "tiers"])]
    with pytest.raises(SystemExit):
        parser_of("pyrostore").parse_args(["up", "--no-such-option"])
