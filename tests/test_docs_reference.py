"""docs/commands.md against the click command tree: every command, every option, every exit code.

The reference is written by hand, so it goes stale the day someone adds an
option. These tests walk ``cli.main.apm`` the way click does
(``Group.commands``, recursively) and say exactly what is missing and where,
so fixing the docs is a matter of pasting the name into the right section:

* every command path (``apm migrate plan``) has a section headed exactly
  ``## apm migrate plan``;
* every option's long name (``--cascade``) appears in backticks in that
  command's own section, e.g. ```--rollback VERSION``` or ```--cascade```;
* every ``EXIT_*`` constant of ``cli/options.py`` has a row in the exit-code
  table, with its number in the first cell and its name in backticks;
* a command or option may be documented ahead of the code (specified in an
  issue, not built yet) only while a line starting ``Not yet built:`` names
  it in backticks; once the code has it, the note must go.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from cli import options as cli_options
from cli.main import apm

ROOT = Path(__file__).resolve().parent.parent
COMMANDS_MD = ROOT / "docs" / "commands.md"
OPTIONS_PY = ROOT / "cli" / "options.py"
EXIT_TABLE_HEADING = "## Exit codes"
#: The note a section carries while its command is specified (in an issue) but not in the code yet.
NOT_YET_BUILT = "Not yet built:"


# -- reading the code ---------------------------------------------------------------------------


def command_paths(command: click.Command, path: str = "apm") -> Iterator[tuple[str, click.Command]]:
    """Every command under ``command``, as (``"apm migrate plan"``, command), parents first."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from command_paths(sub, f"{path} {name}")


def long_names(command: click.Command) -> list[str]:
    """The long option names of ``command`` (``--db``, ``--no-backup``), ``--help`` left out."""
    names: list[str] = []
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        for name in [*param.opts, *param.secondary_opts]:
            if name.startswith("--") and name != "--help" and name not in names:
                names.append(name)
    return names


def exit_constants() -> dict[str, tuple[int, str]]:
    """``EXIT_*`` name → (number, the comment beside it in cli/options.py)."""
    comments: dict[str, str] = {}
    source = OPTIONS_PY.read_text(encoding="utf-8")
    for line in source.splitlines():
        match = re.match(r"^(EXIT_[A-Z_]+)\s*=\s*\d+\s*(?:#\s*(.*))?$", line)
        if match:
            comments[match.group(1)] = (match.group(2) or "").strip()
    return {
        name: (value, comments.get(name, ""))
        for name, value in vars(cli_options).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }


# -- reading the docs ---------------------------------------------------------------------------


def sections(text: str) -> dict[str, str]:
    """``## heading`` → the text up to the next ``## `` heading (``###`` stays inside its section)."""
    found: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        if not in_fence and line.startswith("## "):
            if current is not None:
                found[current] = "\n".join(lines)
            current, lines = line[3:].strip(), []
        elif current is not None:
            lines.append(line)
    if current is not None:
        found[current] = "\n".join(lines)
    return found


def mentions_option(section: str, name: str) -> bool:
    """Whether ``name`` appears in backticks at the start of a code span (```--rollback VERSION```)."""
    return re.search(r"`" + re.escape(name) + r"(?![\w-])", section) is not None


def docs() -> str:
    assert COMMANDS_MD.is_file(), f"{COMMANDS_MD.relative_to(ROOT)} is missing: the command reference lives there"
    return COMMANDS_MD.read_text(encoding="utf-8")


def _where(path: str) -> str:
    return f"docs/commands.md, section `## {path}`"


# -- the tests ----------------------------------------------------------------------------------


def test_every_command_has_its_section() -> None:
    documented = sections(docs())
    missing = [path for path, _ in command_paths(apm) if path not in documented]
    assert not missing, (
        "docs/commands.md has no section for: "
        + ", ".join(missing)
        + ". Add a heading written exactly as `## <command path>` (e.g. `## "
        + missing[0]
        + "`) with its purpose, options, example output and exit codes."
    )


def test_every_option_is_documented_in_its_commands_section() -> None:
    documented = sections(docs())
    gaps: list[str] = []
    for path, command in command_paths(apm):
        section = documented.get(path)
        if section is None:
            continue  # reported by test_every_command_has_its_section
        absent = [name for name in long_names(command) if not mentions_option(section, name)]
        if absent:
            names = ", ".join(f"`{name}`" for name in absent)
            gaps.append(f"{_where(path)} does not mention {names}")
    assert not gaps, (
        "options missing from the command reference (write each in backticks, as `--name` or "
        "`--name VALUE`, inside the section of the command that accepts it):\n  " + "\n  ".join(gaps)
    )


def test_exit_code_table_lists_every_constant() -> None:
    documented = sections(docs())
    assert EXIT_TABLE_HEADING[3:] in documented, (
        f"docs/commands.md has no `{EXIT_TABLE_HEADING}` section; add it with a table "
        f"`| code | name | meaning |` built from the EXIT_* constants in cli/options.py"
    )
    rows = [line for line in documented[EXIT_TABLE_HEADING[3:]].splitlines() if line.lstrip().startswith("|")]
    problems: list[str] = []
    for name, (value, comment) in sorted(exit_constants().items(), key=lambda item: item[1][0]):
        row = next((r for r in rows if re.search(r"`" + name + r"`", r)), None)
        if row is None:
            problems.append(
                f"no row for {name} = {value} ({comment or 'no comment in cli/options.py'}); add "
                f"`| {value} | `{name}` | <meaning> |`"
            )
            continue
        first_cell = row.strip().strip("|").split("|")[0].strip().strip("`")
        if first_cell != str(value):
            problems.append(f"the row for {name} starts with {first_cell!r}, but cli/options.py says {name} = {value}")
    assert not problems, (
        f"docs/commands.md, section `{EXIT_TABLE_HEADING}`, is out of step with cli/options.py:\n  "
        + "\n  ".join(problems)
    )


def not_yet_built_notes(section: str) -> list[str]:
    """The section's lines that start with the ``NOT_YET_BUILT`` note (blockquoted or not)."""
    return [line for line in section.splitlines() if line.lstrip("> ").startswith(NOT_YET_BUILT)]


def test_not_yet_built_notes_match_the_code() -> None:
    """A section or option may be documented ahead of the code only while it says so, and not after."""
    commands = dict(command_paths(apm))
    problems: list[str] = []
    for heading, body in sections(docs()).items():
        if not heading.startswith("apm"):
            continue
        notes = not_yet_built_notes(body)
        named = set(re.findall(r"`([^`]+)`", " ".join(notes)))
        command = commands.get(heading)
        if command is None:
            if heading not in named:
                problems.append(
                    f"`## {heading}` documents a command that does not exist: fix the heading, remove the "
                    f"section, or add a line '> {NOT_YET_BUILT} `{heading}` ...' saying where it is specified"
                )
            continue
        if heading in named:
            problems.append(
                f"`## {heading}` says '{NOT_YET_BUILT} `{heading}`' but the command exists now: remove the "
                f"note and compare the section's example output with the real command"
            )
        built = sorted(name for name in named if name.split()[0] in long_names(command))
        if built:
            problems.append(
                f"`## {heading}` lists {', '.join(f'`{n}`' for n in built)} as '{NOT_YET_BUILT}', but "
                f"{heading} accepts {'it' if len(built) == 1 else 'them'} now: remove {'it' if len(built) == 1 else 'them'} "
                f"from the note and check the description against `{heading} --help`"
            )
    assert not problems, "docs/commands.md:\n  " + "\n  ".join(problems)


def test_the_walk_sees_the_whole_tree() -> None:
    """Guard the guard: the walk must reach nested subcommands and the shared options."""
    paths = dict(command_paths(apm))
    assert {"apm", "apm migrate", "apm migrate plan", "apm status", "apm agents list"} <= set(paths)
    assert "--db" in long_names(paths["apm migrate plan"]) and "--help" not in long_names(paths["apm"])
    assert mentions_option("`--rollback VERSION`", "--rollback")
    assert not mentions_option("`--rollback-all`", "--rollback")


def test_the_guide_lists_every_sql_header_directive_and_every_lock_code() -> None:
    """docs/migrations-guide.md's SQL directives are the loader's (it said three of five: tryout5 #5), and
    docs/locks.md's findings table has a row per finding code."""
    from planner.loader import DIRECTIVES
    from planner.locks import CODES

    guide = (ROOT / "docs" / "migrations-guide.md").read_text()
    sentence = guide[guide.index("is a directive:"):guide.index("any other", guide.index("is a directive:"))]
    assert set(re.findall(r"`([a-z_]+)`", sentence)) >= set(DIRECTIVES), sentence
    locks = (ROOT / "docs" / "locks.md").read_text()
    assert [code for code in CODES if not re.search(rf"^\| `{code}` \|", locks, re.M)] == []
