"""The container files as Docker would read them, for the tests that check them without a
Docker engine: the Dockerfile's instructions, docker-compose.yml with its variables filled
from .env.example (as after ``cp .env.example .env``), and the settings agentq reads.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

#: The modules that read agentq's settings from the environment: the app's configuration,
#: the web's gunicorn configuration (WEB_CONCURRENCY, WEB_THREADS) and the CLI's options
#: (PORT for ``agentq serve``).
SETTINGS_MODULES = (
    ROOT / "app" / "config.py",
    ROOT / "app" / "observability" / "gunicorn_conf.py",
    ROOT / "app" / "cli.py",
)

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``.
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments) in order, continuation lines joined."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        ),
    )
    return [
        (words[0].upper(), words[1].strip() if len(words) > 1 else "")
        for words in (line.strip().split(None, 1) for line in text.splitlines() if line.strip())
    ]


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the Dockerfile's last stage (the image that runs)."""
    steps = instructions()
    start = max(i for i, (name, _) in enumerate(steps) if name == "FROM")
    return steps[start:]


def exec_form(instruction: str) -> list[str]:
    """The JSON (exec form) argument list of the final stage's ``instruction``."""
    [args] = [args for name, args in final_stage() if name == instruction]
    if instruction == "HEALTHCHECK":
        args = args[args.index("CMD ") + len("CMD ") :]
    return json.loads(args)


def image_environment() -> dict[str, str]:
    """The ENV of the final stage (``NAME=value`` pairs)."""
    env = {}
    for name, args in final_stage():
        if name == "ENV":
            env.update(pair.split("=", 1) for pair in args.split())
    return env


def env_example() -> dict[str, str]:
    """.env.example's ``NAME=value`` lines."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def compose_variables() -> set[str]:
    """The names docker-compose.yml interpolates."""
    return {match["name"] for match in VARIABLE.finditer(COMPOSE.read_text())}


def interpolate(text: str, env: dict[str, str]) -> str:
    """``text`` with its variables filled as Compose fills them from ``env``.

    :raises AssertionError: for a required variable (``:?``, ``?``) that ``env`` lacks.
    """

    def value(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        given = env.get(name)
        missing = not given if op and op.startswith(":") else given is None
        if op and op.endswith("?"):
            assert not missing, f"{name} is required by docker-compose.yml: {arg}"
        if op and op.endswith("-") and missing:
            return arg
        return given or ""

    return VARIABLE.sub(value, text)


@functools.cache
def compose() -> dict:
    """docker-compose.yml as Compose runs it after ``cp .env.example .env``."""
    return yaml.safe_load(interpolate(COMPOSE.read_text(), env_example()))


def agentq_services() -> dict[str, dict]:
    """The services that run the image built from the Dockerfile."""
    return {name: s for name, s in compose()["services"].items() if s.get("build") == "."}


def argv(service: dict) -> list[str]:
    """What a service of the agentq image runs: its entry point and command, or the image's."""
    return service.get("entrypoint", exec_form("ENTRYPOINT")) + service.get(
        "command", exec_form("CMD")
    )


def environment(service: dict) -> dict[str, str]:
    """A service's environment as its processes see it: the image's ENV, then its own."""
    own = {
        name: "" if value is None else str(value)
        for name, value in service.get("environment", {}).items()
    }
    return {**image_environment(), **own}


def mounts(service: dict) -> dict[str, Path]:
    """A service's bind mounts: the path in the container -> the file or directory here."""
    pairs = (volume.split(":")[:2] for volume in service.get("volumes", []))
    return {
        target: (COMPOSE.parent / source).resolve()
        for source, target in pairs
        if source.startswith(".")
    }


def _environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def environment_reads(path: Path) -> set[str]:
    """The environment variables a module reads: ``os.environ.get``, ``os.environ[...]``,
    ``os.getenv``, the config's ``_env_*`` helpers and click's ``envvar=``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            reads = (
                isinstance(func, ast.Attribute)
                and ((func.attr == "get" and _environ(func.value)) or func.attr == "getenv")
            ) or (isinstance(func, ast.Name) and func.id.startswith("_env_"))
            if reads and node.args and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
            names.update(
                kw.value.value
                for kw in node.keywords
                if kw.arg == "envvar" and isinstance(kw.value, ast.Constant)
            )
        elif isinstance(node, ast.Subscript) and _environ(node.value):
            if isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
    return names


def agentq_settings() -> set[str]:
    """Every environment variable agentq reads as a setting (``SETTINGS_MODULES``)."""
    return set().union(*(environment_reads(path) for path in SETTINGS_MODULES))
