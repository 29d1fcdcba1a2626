"""The Docker image and the compose file, checked without a Docker engine: the image runs as uid
10001 in a root-owned /app, so every path the app writes to must be in the /data volume; in
docker-compose.yml what .env sets must win over the defaults, and RabbitMQ is an optional profile."""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from app.ground.config import Settings

ROOT = Path(__file__).resolve().parents[2]
UID = "10001"
# ${NAME}, ${NAME:-default} or ${NAME-default}: compose reads NAME from the shell, then from .env.
INTERPOLATED = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}$")


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions in order, as (KEYWORD, arguments), continuations joined."""
    joined = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = (line.strip() for line in joined.splitlines())
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and not line.startswith("#"))
    ]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in instructions():
        if keyword == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))  # type: ignore[arg-type]
    return env


def last(keyword: str) -> str:
    return [args for word, args in instructions() if word == keyword][-1]


def inside(path: str, folder: str, cwd: str = "/") -> bool:
    """Whether `path` (relative ones taken from `cwd`) lies in `folder`."""
    resolved = PurePosixPath(cwd, path)
    parts = [p for p in resolved.parts if p != "."]
    return PurePosixPath(*parts).is_relative_to(folder) and ".." not in parts


def sqlite_file(url: str) -> str:
    assert url.startswith("sqlite+aiosqlite:///"), url
    return url.removeprefix("sqlite+aiosqlite:///")


def test_the_image_runs_as_uid_10001_and_writes_only_into_its_volume() -> None:
    volume = shlex.split(last("VOLUME"))[0]
    runs = " ".join(args for word, args in instructions() if word == "RUN")
    [useradd] = [shlex.split(c) for c in runs.split("&&") if c.split()[:1] == ["useradd"]]
    assert useradd[useradd.index("--uid") + 1] == UID
    user = (UID, useradd[-1])  # the uid and the user's name, the last argument
    assert last("USER").split(":")[0] in user, last("USER")
    owner = re.search(rf"chown (\S+) {re.escape(volume)}(?:\s|$)", runs)
    assert owner and owner[1].split(":")[0] in user, "the volume belongs to the app's user"

    env, workdir = image_env(), last("WORKDIR")
    assert inside(env["DATA_DIR"], volume, workdir), env["DATA_DIR"]
    assert inside(sqlite_file(env["DATABASE_URL"]), volume, workdir), env["DATABASE_URL"]
    for name in ("HOME", "XDG_CACHE_HOME"):
        assert inside(env[name], volume), f"{name}={env[name]} is outside {volume}"
    # The process runs from inside the volume, so a relative path (the defaults, or .env.example's
    # ./data in a copied .env) lands there too, never in the read-only /app.
    assert inside(workdir, volume)
    defaults = Settings.model_fields
    assert inside(str(defaults["data_dir"].default), volume, workdir)
    assert inside(sqlite_file(str(defaults["database_url"].default)), volume, workdir)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def interpolate(value: str, dotenv: dict[str, str]) -> str:
    """What compose makes of a value of the forms INTERPOLATED matches, given .env's variables."""
    match = INTERPOLATED.match(value)
    if match is None:
        return value
    name, op, default = match["name"], match["op"], match["default"] or ""
    if name in dotenv and (dotenv[name] or op != ":-"):
        return dotenv[name]
    return default


def test_compose_lets_dotenv_win_and_runs_rabbitmq_only_in_its_profile() -> None:
    services = compose()["services"]
    app = services["app"]
    environment: dict[str, Any] = app["environment"]
    assert isinstance(environment, dict), "environment as a mapping, each value interpolated"
    for name in ("DATABASE_URL", "RABBITMQ_URL", "HOST"):
        assert name in environment, name
    for name, value in environment.items():
        # A literal here would override the same name from env_file: .env would silently lose.
        match = INTERPOLATED.match(str(value))
        assert match and match["name"] == name, f"{name}: {value!r} is not ${{{name}:-...}}"

    mine = {"DATABASE_URL": "postgresql+asyncpg://me@db.example/mine", "HOST": "127.0.0.1"}
    assert {n: interpolate(environment[n], mine) for n in mine} == mine
    defaults = {name: interpolate(value, {}) for name, value in environment.items()}
    assert (
        defaults["DATABASE_URL"].startswith("postgresql+asyncpg://")
        and "@postgres:" in defaults["DATABASE_URL"]
    )
    assert defaults["RABBITMQ_URL"] == "", "without the profile there is no broker to connect to"
    env_files = app["env_file"]
    assert any((e["path"] if isinstance(e, dict) else e) == ".env" for e in env_files)

    assert "rabbitmq" in services["rabbitmq"].get("profiles", [])
    assert all("profiles" not in services[name] for name in ("app", "postgres"))
    waits_for = app.get("depends_on", {})
    assert "rabbitmq" not in waits_for or waits_for["rabbitmq"].get("required") is False


def test_compose_keeps_the_apps_files_in_a_named_volume() -> None:
    document = compose()
    mounts = [str(m).split(":") for m in document["services"]["app"].get("volumes", [])]
    volume = shlex.split(last("VOLUME"))[0]
    named = [source for source, target, *_ in mounts if target == volume]
    assert named and named[0] in (document.get("volumes") or {}), mounts
