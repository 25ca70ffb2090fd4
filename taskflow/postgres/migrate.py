"""Schema migrations with yoyo (``migrations/`` at the repository root), under yoyo's lock so
two processes starting together do not race."""

from __future__ import annotations

import sys
from pathlib import Path


def migrations_dir(prefix: Path = Path(sys.prefix)) -> Path:
    """``migrations/`` of this checkout (source tree, editable install), else the copy a
    wheel installs under ``<prefix>/share/taskflow/migrations`` (pyproject's data-files)."""
    source = Path(__file__).resolve().parents[2] / "migrations"
    return source if source.is_dir() else prefix / "share" / "taskflow" / "migrations"


MIGRATIONS = migrations_dir()


def yoyo_url(url: str) -> str:
    """yoyo reads ``postgresql://`` as psycopg2; TaskFlow uses psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def migration_ids(directory: Path = MIGRATIONS) -> list[str]:
    """The ids yoyo gives the migrations in ``directory`` (``0001.jobs.sql`` -> ``0001.jobs``)."""
    return sorted(
        p.name.removesuffix(".sql")
        for p in directory.glob("*.sql")
        if not p.name.endswith(".rollback.sql")
    )


def migrate(url: str, directory: Path = MIGRATIONS) -> list[str]:
    """Apply pending migrations; returns their ids (empty when the schema is current)."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(url))
    try:
        migrations = read_migrations(str(directory))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()


def rollback(url: str, steps: int = 1, directory: Path = MIGRATIONS) -> list[str]:
    """Roll back the last ``steps`` applied migrations; returns their ids."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(url))
    try:
        migrations = read_migrations(str(directory))
        with backend.lock():
            applied = backend.to_rollback(migrations)[:steps]
            backend.rollback_migrations(applied)
        return [m.id for m in applied]
    finally:
        backend.connection.close()


def applied(url: str, directory: Path = MIGRATIONS) -> list[str]:
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(url))
    try:
        migrations = read_migrations(str(directory))
        return [m.id for m in migrations if backend.is_applied(m)]
    finally:
        backend.connection.close()
