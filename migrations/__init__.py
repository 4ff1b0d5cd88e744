"""APM's own migration catalog, installed as the package ``apm_migrations``.

The loader reads the ``migration_*.py`` files of this folder by path; this file
only makes the folder findable after installation (``apm_migrations.__path__``).
"""
