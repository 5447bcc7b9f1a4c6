"""PostgreSQL for tests: a fresh database per test. Outside CI a missing server skips; with
CI=true it fails, since CI's machine runs PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import os
import uuid

import pytest

# HUBSWEEP_TEST_PG points the tests at another server (the test of this rule uses a dead one).
SERVER = os.environ.get("HUBSWEEP_TEST_PG", "postgresql://127.0.0.1:5432")


def server_answers() -> bool:
    try:
        import psycopg

        with psycopg.connect(f"{SERVER}/postgres", connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def postgres_db():
    if not server_answers():
        message = f"no PostgreSQL server answers at {SERVER}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run these tests (.ci/run starts the server)")
        pytest.skip(message)
    import psycopg

    name = f"hubsweep_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{SERVER}/{name}"
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
