"""The reference docs against the code they describe: every study-file field documented with
its real default, every documented command real, and no doc leaning on material outside it."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from bench.cli import build_parser
from bench.studies.spec import RepeatSpec, StudySpec, Variant

DOCS = Path(__file__).resolve().parent.parent / "docs"
STUDIES_MD = DOCS / "studies.md"

#: Where each model's fields are documented in docs/studies.md's tables.
MODELS = {"": StudySpec, "repeat.": RepeatSpec, "variants.<name>.": Variant}


def field_rows(text: str) -> dict[str, str]:
    """``| `name` | type | default | meaning |`` rows: field name -> default cell."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|[^|]*\|\s*([^|]*?)\s*\|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def rendered_default(info) -> str:
    """How the docs write a field's default: ``required``, or the YAML value in backticks."""
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default
    if hasattr(value, "model_dump"):  # a nested section whose fields all keep their defaults
        value = {}
    if value is None:
        return "`null`"
    if value == "":
        return '`""`'
    if isinstance(value, (dict, list)) and not value:
        return "`{}`" if isinstance(value, dict) else "`[]`"
    return f"`{value}`"


@pytest.mark.parametrize("prefix", list(MODELS))
def test_every_study_field_is_documented_with_its_default(prefix):
    model = MODELS[prefix]
    rows = field_rows(STUDIES_MD.read_text())
    for name, info in model.model_fields.items():
        key = prefix + name
        assert key in rows, f"docs/studies.md has no table row for `{key}` ({model.__name__}.{name})"
        assert rows[key] == rendered_default(info), (
            f"docs/studies.md gives `{key}` the default {rows[key]}; the model's is {rendered_default(info)}")


def test_field_rows_reads_the_tables():
    """The parser the check above relies on finds rows, so a reformatted table cannot make
    that check vacuous."""
    rows = field_rows(STUDIES_MD.read_text())
    assert rows["experiment"] == "required" and rows["n_trials"] == "`20`" and rows["repeat.seeds"] == "`0`"


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return out.getvalue()


def test_documented_commands_exist():
    """Every ``bench COMMAND`` (and ``bench studies ACTION``) a doc names is a real command."""
    commands = set()
    for md in DOCS.glob("*.md"):
        for code in re.findall(r"`(?:\.venv/bin/)?bench ([^`]+)`", md.read_text()):
            tokens = code.split()
            if tokens[:1] == ["--config"]:  # bench --config FILE COMMAND ...
                tokens = tokens[2:]
            words = [w for w in tokens if not w.startswith("-")]
            if words:
                commands.add(tuple(words[:2]) if words[0] == "studies" and len(words) > 1 else (words[0],))
    assert ("grid",) in commands and ("studies", "delete") in commands  # the scan sees the docs
    for cmd in sorted(commands):
        assert "usage: bench " + " ".join(cmd) in _help(list(cmd)), f"docs name `bench {' '.join(cmd)}`, no such command"


def test_docs_stand_alone():
    """The docs explain in their own words: no pointers to design notes or issue threads."""
    for md in sorted(DOCS.glob("*.md")):
        text = md.read_text()
        assert "DESIGN.md" not in text, f"{md.name} cites DESIGN.md"
        found = re.search(r"\bissues?\b", text, re.IGNORECASE)
        assert found is None, f"{md.name} mentions an issue: ...{text[max(0, found.start() - 40):found.end() + 40]}..."
