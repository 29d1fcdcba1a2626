"""Schemathesis against the real app (a child process) on PostgreSQL and on SQLite, every check
on: no 5xx, every status and body as the OpenAPI document says, 405 with the right Allow, valid
data accepted and invalid data refused (issue 14 item 8). The few rules a schema cannot state
are named in tests/schemathesis.toml. Fixed seed, so a failure reproduces."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from testkit.databases import migrate, postgres_database, sqlite_url
from testkit.processes import app_env, app_process

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
# 15 examples per operation (25 before): the two runs were the suite's longest tests (40 s each on
# 2 cores); the property tests of the faces (tests/app/intake/test_properties_*.py) go deeper.
SEED, MAX_EXAMPLES = "20260", "15"
# Nothing answers here: batches wait, and the fuzzer only talks to the API.
NO_INFERENCE = "http://127.0.0.1:9"


@asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield await migrate(sqlite_url(tmp_path))
        return
    async with postgres_database() as url:
        yield await migrate(url)


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_schemathesis_finds_nothing(kind: str, tmp_path: Path) -> None:
    async with database(kind, tmp_path) as url:
        env = app_env(url, NO_INFERENCE, tmp_path / "data", SCHEDULER_ENABLED="false")
        async with app_process(env) as (_, base):
            command = [
                *(str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG)),
                *("run", f"{base}/api/openapi", "--checks", "all", "--seed", SEED),
                # One worker: with two threads, hypothesis parsing lambdas' source in both at once
                # trips CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905),
                # seen as a Runtime Error in fresh clones, whose caches are empty.
                *("--max-examples", MAX_EXAMPLES, "--workers", "1", "--no-color"),
            ]
            fuzz = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            output, _ = await asyncio.wait_for(fuzz.communicate(), timeout=300)
    text = output.decode("utf-8", "replace")
    assert fuzz.returncode == 0, text[-20_000:]
