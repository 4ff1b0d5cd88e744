"""Where a command that writes files may write them: a project's catalog, never an installed package.

``apm migrate new``, ``squash``, ``check --fix`` and ``docs`` write into the
migrations folder. Without a named folder that is APM's shipped catalog,
which a wheel installs inside ``site-packages``: a file written there is lost
at the next upgrade, changes every other project's default catalog on the
machine, and is not the user's project at all. So these commands need a
catalog named by an option, an ``APM_*`` variable or the config file, and
refuse any path inside an installed package, named or not.
"""

from __future__ import annotations

from pathlib import Path

import click

#: How to name a project's catalog, for every refusal below.
NAME_ONE = ("name your project's folder with --migrations-dir DIR, the APM_MIGRATIONS_DIR variable, "
            "or migrations_dir = \"DIR\" in apm.toml")


def installed_package_roots() -> list[Path]:
    """The folders Python installs packages into (site-packages, dist-packages, the user's), resolved."""
    import site
    import sysconfig

    roots = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    roots.update(getattr(site, "getsitepackages", list)())
    user = getattr(site, "getusersitepackages", lambda: None)()
    if user:
        roots.add(user)
    return [Path(root).resolve() for root in sorted(roots)]


def inside_installed_package(path: Path) -> bool:
    """Whether ``path`` (which may not exist yet) lies inside a folder Python installs packages into."""
    resolved = Path(path).resolve()
    return any(resolved == root or root in resolved.parents for root in installed_package_roots())


def catalog_to_write(what: str) -> Path:
    """The catalog ``what`` (e.g. ``apm migrate new``) may write into, or a usage error (exit 2) saying how to name one.

    The default catalog is APM's shipped one: never a place to write, even in
    an editable checkout, because the same command run anywhere else would
    write into site-packages.
    """
    from cli.options import settings

    options = settings()
    named = options.migrations_dir if options.migrations_dir is not None else options.config.get("migrations_dir")
    if named is None:
        raise click.UsageError(f"{what} writes into a project's migrations folder, and none is named (the default is "
                               f"APM's installed catalog, which is never written); {NAME_ONE}")
    refuse_installed(named, what)
    return named


def refuse_installed(path: Path, what: str) -> None:
    """A usage error (exit 2) when ``path`` is inside an installed package; nothing has been written."""
    if inside_installed_package(path):
        raise click.UsageError(f"{what} would write into {path}, inside an installed package; nothing was "
                               f"written. {NAME_ONE[0].upper()}{NAME_ONE[1:]}")
