"""``apm migrate graph`` and ``apm migrate docs``: the graph drawn for people.

Both are generated from the catalog (and the ledger, when the database
exists), so the seed's hand-drawn ``0020 → 0027 → 0029`` and its hand-kept
catalog README cannot go stale: regenerate them instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.options import VERSION, settings, shared_options

TEXT_FORMATS = ("mermaid", "dot", "text", "json")  # planner.diagram_formats.FORMATS; kept here so --help needs no import
IMAGE_FORMATS = ("svg", "png")


@click.command("graph")
@shared_options()
@click.option("--format", "fmt", type=click.Choice(TEXT_FORMATS + IMAGE_FORMATS), default="text",
              show_default=True, help="Output format; svg and png need Graphviz's dot.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to FILE instead of standard output.")
@click.option("--focus", type=VERSION, help="Only VERSION, what it needs and what needs it.")
@click.option("--rollback", type=VERSION, help="Highlight what a cascade rollback of VERSION takes.")
def graph_command(fmt: str, output: Path | None, focus: str | None, rollback: str | None) -> None:
    """Draw the dependency graph (applied/pending styling when the database exists)."""
    from planner import diagram_formats as diagram
    from planner.loader import load_catalog

    catalog = load_catalog(settings().catalog_dir)
    recorded = settings().engine.applied_if_exists()  # no database yet: no applied/pending styling
    applied = list(recorded) if recorded is not None else None
    if fmt in IMAGE_FORMATS:
        if output is None and sys.stdout.isatty():
            raise click.UsageError(f"--format {fmt} writes binary data: pass -o FILE.{fmt}")
        source = diagram.to_dot(catalog, applied, focus=focus, rollback=rollback)
        data: bytes = diagram.render_image(source, fmt)
    else:
        text = diagram.FORMATS[fmt](catalog, applied, focus=focus, rollback=rollback)
        data = (text if text.endswith("\n") else text + "\n").encode()
    if output is None:
        click.echo(data, nl=False)  # bytes go to the binary stream underneath
    else:
        output.write_bytes(data)
        click.echo(f"Wrote {output}")


@click.command("docs")
@shared_options()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the page [default: README.md in the migrations folder].")
@click.option("--check", is_flag=True, help="Write nothing; exit 3 if the page on disk is out of date.")
def docs_command(output: Path | None, check: bool) -> None:
    """Write the catalog page: table, mermaid diagram and each migration's text."""
    from planner.catalog_page import catalog_page
    from planner.loader import load_catalog

    from cli.writable import catalog_to_write, refuse_installed

    if check:
        target = output or settings().catalog_dir / "README.md"
    elif output is not None:
        refuse_installed(output, "apm migrate docs")
        target = output
    else:
        target = catalog_to_write("apm migrate docs") / "README.md"
    catalog = load_catalog(settings().catalog_dir)
    page = catalog_page(catalog)
    if check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != page:
            from cli.errors import CommandError
            from cli.options import EXIT_CATALOG

            # A stale page is a catalog problem for CI to fail on, not a bug (exit 1 means a bug).
            import shlex

            folder = shlex.quote(str(settings().catalog_dir))
            raise CommandError(f"{target} is out of date; run `apm --migrations-dir {folder} migrate docs` to "
                               f"refresh it", EXIT_CATALOG)
        click.echo(f"{target} is up to date")
        return
    target.write_text(page, encoding="utf-8")
    click.echo(f"Wrote {target}")
