"""The production-shaped stack (docker-compose.yml) and the image (Dockerfile), checked
against the code they run: the Settings aliases, SEARCH_ATTRIBUTES, the `parley` command
and pyproject.toml. No Docker engine is needed; these read the files."""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from sqlalchemy.engine import make_url

from src.cli import main as parley_main
from src.config import Settings
from src.sealing.state_envelope import new_key_setting
from src.temporal.search_attributes import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

PARLEY_SERVICES = ("api", "worker")
STACK_SERVICES = {"postgresql", "temporal", "temporal-ui", "api", "worker", "temporal-setup"}
# Variables api/worker may carry that Settings does not read. None today; add one here only
# with a comment saying what reads it.
DOCUMENTED_PASS_THROUGH: frozenset[str] = frozenset()
# Optional host variables handed to api/worker only when the host sets them.
OPTIONAL_HOST_VARIABLES = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "PARLEY_LLM")
# The Temporal UI's own listening port when TEMPORAL_UI_PORT is unset (temporalio/ui docs),
# and the host port Parley documents for the UI (DESIGN.md; the dev stack uses it too).
UI_CONTAINER_PORT_DEFAULT = 8080
UI_HOST_PORT = 8233
# SQL plugins temporalio/auto-setup accepts for PostgreSQL in its DB variable.
AUTO_SETUP_POSTGRES_PLUGINS = {"postgres12", "postgres12_pgx"}
POSTGRES_PORT = 5432
# Host variables compose must refuse to start without: the bootstrap key and the key rings.
KEY_RINGS = ("PARLEY_PAYLOAD_KEYS", "PARLEY_STATE_KEYS", "PARLEY_SECRET_KEYS")
REQUIRED_HOST: dict[str, str] = {
    "PARLEY_API_KEY": "k",
    **{name: new_key_setting(f"{name.split('_')[1].lower()}1") for name in KEY_RINGS},
}
# Temporal services: nothing of them may be published beyond loopback (no auth, no TLS).
TEMPORAL_SERVICES = ("temporal", "temporal-ui")
LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


# --- reading the files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


class MissingVariable(LookupError):
    """A `${VAR:?message}` / `${VAR?message}` reference with VAR unset on the host."""


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, host: Mapping[str, str]) -> str:
    """Compose's interpolation: `$$`, `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`,
    `${VAR:?m}`, `${VAR?m}`."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["name"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        current = host.get(name)
        missing = not current if op in (":-", ":?") else current is None
        if not missing:
            assert current is not None
            return current
        if op in (":-", "-"):
            return arg
        if op in (":?", "?"):
            raise MissingVariable(f"{name}: {arg}")
        return ""

    return _REFERENCE.sub(replace, value)


def raw_environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's `environment`, map or list form, before interpolation."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in environment)
        return {name: value for name, value in pairs}
    return {
        name: None
        if value is None
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
        for name, value in environment.items()
    }


def container_environment(service: Mapping[str, Any], host: Mapping[str, str]) -> dict[str, str]:
    """What the container sees: values interpolated; a name with no value takes the host's
    value when the host has one and is left out otherwise."""
    resolved: dict[str, str] = {}
    for name, value in raw_environment(service).items():
        if value is None:
            if name in host:
                resolved[name] = host[name]
        else:
            resolved[name] = interpolate(value, host)
    return resolved


def port_mappings(service: Mapping[str, Any]) -> list[tuple[int | None, int]]:
    """(published, container) pairs from short ("8000:8000", "127.0.0.1:1:2", "7233") or
    long ({target, published}) port syntax."""
    mappings: list[tuple[int | None, int]] = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published = port.get("published")
            mappings.append((None if published is None else int(published), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        mappings.append((int(parts[-2]) if len(parts) > 1 else None, int(parts[-1])))
    return mappings


def published_ports(service: Mapping[str, Any]) -> list[tuple[str | None, int | None, int]]:
    """(host ip, published, container) per port; no host ip means every interface."""
    found: list[tuple[str | None, int | None, int]] = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            published = port.get("published")
            found.append(
                (
                    port.get("host_ip"),
                    None if published is None else int(published),
                    int(port["target"]),
                )
            )
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        if len(parts) == 3:
            found.append((parts[0].strip("[]"), int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            found.append((None, int(parts[0]), int(parts[1])))
        else:
            # A bare container port is published on a random port of every interface.
            found.append((None, 0, int(parts[0])))
    return found


def command_text(value: Any) -> str:
    """A compose command/entrypoint (string or list) as one string."""
    if value is None:
        return ""
    return value if isinstance(value, str) else " ".join(str(part) for part in value)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def settings_in_container(
    monkeypatch: pytest.MonkeyPatch, environment: Mapping[str, str]
) -> Settings:
    """Settings as a container with exactly `environment` would load them."""
    enter_container(monkeypatch, environment)
    return Settings(_env_file=None)


def enter_container(monkeypatch: pytest.MonkeyPatch, environment: Mapping[str, str]) -> None:
    """This process's environment as a container with exactly `environment` has it."""
    for field in Settings.model_fields.values():
        if field.alias:
            monkeypatch.delenv(field.alias, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


def settings_aliases() -> set[str]:
    return {field.alias for field in Settings.model_fields.values() if field.alias}


def temporal_frontend_port() -> int:
    """The frontend port Parley assumes when nothing says otherwise (Settings' default)."""
    return split_address(Settings.model_construct().temporal_target)[1]


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """Dependency -> condition (a bare list means service_started)."""
    declared = service.get("depends_on") or {}
    if isinstance(declared, list):
        return {name: "service_started" for name in declared}
    return {
        name: (spec or {}).get("condition", "service_started") for name, spec in declared.items()
    }


def postgres_init_scripts(service: Mapping[str, Any]) -> Iterator[Path]:
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0]
        if target.startswith("/docker-entrypoint-initdb.d") and source.startswith("."):
            yield (ROOT / source).resolve()


def postgres_accounts(service: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
    """(role -> password, databases) the postgres image and its init scripts create."""
    environment = container_environment(service, {})
    superuser = environment.get("POSTGRES_USER", "postgres")
    roles = {superuser: environment["POSTGRES_PASSWORD"]}
    databases = {environment.get("POSTGRES_DB", superuser)}
    for script in postgres_init_scripts(service):
        sql = script.read_text()
        for role, password in re.findall(
            r"CREATE\s+(?:ROLE|USER)\s+\"?(\w+)\"?[^;]*?PASSWORD\s+'([^']*)'", sql, re.I
        ):
            roles[role] = password
        databases.update(re.findall(r"CREATE\s+DATABASE\s+\"?(\w+)\"?", sql, re.I))
    return roles, databases


def parley_subcommand_exists(name: str) -> bool:
    """Ask the real `parley` argument parser: `parley NAME --help` exits 0 only for a
    subcommand it knows (and runs nothing)."""
    try:
        parley_main([name, "--help"])
    except SystemExit as exit_:
        return exit_.code == 0
    return False


def parley_invocations(command: str) -> list[str]:
    """The subcommands of every `parley ...` in a shell command line."""
    words = shlex.split(command.replace("&&", " && ").replace(";", " ; "))
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "parley"]


# --- the stack --------------------------------------------------------------------------


def test_stack_has_postgresql_temporal_ui_api_worker_and_a_one_shot_temporal_setup(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) == STACK_SERVICES
    assert services["postgresql"]["image"].split(":")[0] == "postgres"
    assert services["temporal"]["image"].split(":")[0] == "temporalio/auto-setup"
    assert services["temporal-ui"]["image"].split(":")[0] == "temporalio/ui"
    assert services["temporal-setup"]["image"].split(":")[0] == "temporalio/admin-tools"
    for name in PARLEY_SERVICES:
        assert "build" in services[name], f"{name} must be built from the repository"


def test_every_image_is_pinned_to_a_tag_and_temporal_tools_match_the_server_version(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: pin {image} to a release"
    server_version = services["temporal"]["image"].rpartition(":")[2]
    tools_tag = services["temporal-setup"]["image"].rpartition(":")[2]
    assert tools_tag.split("-")[0] == server_version


def test_api_and_worker_only_set_settings_aliases_or_documented_pass_throughs(
    services: dict[str, dict[str, Any]],
) -> None:
    known = settings_aliases() | DOCUMENTED_PASS_THROUGH
    for name in PARLEY_SERVICES:
        unknown = set(raw_environment(services[name])) - known
        assert not unknown, f"{name} sets variables Settings never reads: {sorted(unknown)}"


@pytest.mark.parametrize("name", PARLEY_SERVICES)
def test_parley_api_key_is_required_from_the_host(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    without = {k: v for k, v in REQUIRED_HOST.items() if k != "PARLEY_API_KEY"}
    with pytest.raises(MissingVariable, match="PARLEY_API_KEY"):
        container_environment(services[name], without)
    environment = container_environment(
        services[name], {**REQUIRED_HOST, "PARLEY_API_KEY": "from-host"}
    )
    assert environment["PARLEY_API_KEY"] == "from-host"


@pytest.mark.parametrize("name", PARLEY_SERVICES)
@pytest.mark.parametrize("ring", KEY_RINGS)
def test_every_key_ring_is_required_from_the_host_with_a_message_saying_what_it_is(
    services: dict[str, dict[str, Any]], name: str, ring: str
) -> None:
    for missing in ({}, {ring: ""}):  # unset, and set but empty (`:?`)
        host = {**{k: v for k, v in REQUIRED_HOST.items() if k != ring}, **missing}
        with pytest.raises(MissingVariable, match=ring) as refused:
            container_environment(services[name], host)
        assert "parley new-key" in str(refused.value)
    environment = container_environment(services[name], REQUIRED_HOST)
    assert environment[ring] == REQUIRED_HOST[ring]


@pytest.mark.parametrize("name", PARLEY_SERVICES)
def test_api_and_worker_run_in_production_mode_with_the_host_key_rings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = container_environment(services[name], REQUIRED_HOST)
    settings = settings_in_container(monkeypatch, environment)

    assert settings.environment == "production"
    assert [k.key_id for k in settings.payload_keys()] == ["payload1"]
    assert [k.key_id for k in settings.state_keys()] == ["state1"]
    assert [k.key_id for k in settings.secret_keys()] == ["secret1"]


@pytest.mark.parametrize("ring", KEY_RINGS)
def test_production_settings_refuse_to_load_without_a_key_ring(
    services: dict[str, dict[str, Any]], ring: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the api/worker do when started in production mode by other means than compose.
    environment = container_environment(services["api"], REQUIRED_HOST)
    del environment[ring]

    with pytest.raises(ValueError, match=f"PARLEY_ENVIRONMENT=production needs {ring}"):
        settings_in_container(monkeypatch, environment)


def test_parley_refuses_to_start_in_production_without_key_rings_in_words(
    services: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    environment = container_environment(services["worker"], REQUIRED_HOST)
    for ring in KEY_RINGS:
        del environment[ring]
    enter_container(monkeypatch, environment)

    with pytest.raises(SystemExit) as exit_:
        parley_main(["worker"])

    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "PARLEY_PAYLOAD_KEYS, PARLEY_STATE_KEYS, PARLEY_SECRET_KEYS" in error
    assert "Traceback" not in error


@pytest.mark.parametrize("name", TEMPORAL_SERVICES)
def test_nothing_of_temporal_is_published_beyond_loopback(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    for host_ip, published, _ in published_ports(services[name]):
        assert published is None or host_ip in LOOPBACK_HOSTS, (name, host_ip, published)
    assert "network_mode" not in services[name]


@pytest.mark.parametrize("name", PARLEY_SERVICES)
def test_environment_with_only_the_required_host_variable_loads_into_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unset optional host variables must not reach the container as empty strings:
    # PARLEY_LLM="" fails validation and OPENAI_BASE_URL="" replaces the client's default.
    environment = container_environment(services[name], REQUIRED_HOST)
    for variable in OPTIONAL_HOST_VARIABLES:
        assert environment.get(variable) != "", f"{variable} would be set to an empty string"
    settings = settings_in_container(monkeypatch, environment)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k"
    assert settings.default_llm == "scripted"
    assert settings.database_url.startswith("postgresql+asyncpg://")


@pytest.mark.parametrize("name", PARLEY_SERVICES)
def test_llm_variables_set_on_the_host_pass_through_to_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = {
        **REQUIRED_HOST,
        "OPENAI_BASE_URL": "http://llm.internal:8080/v1",
        "OPENAI_API_KEY": "sk-host",
        "PARLEY_LLM": "openai",
    }
    settings = settings_in_container(monkeypatch, container_environment(services[name], host))
    assert settings.openai_base_url == host["OPENAI_BASE_URL"]
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == host["OPENAI_API_KEY"]
    assert settings.default_llm == "openai"


@pytest.mark.parametrize("name", PARLEY_SERVICES)
def test_temporal_address_points_at_the_temporal_service_frontend_port(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    environment = container_environment(services[name], REQUIRED_HOST)
    host, port = split_address(environment["TEMPORAL_ADDRESS"])
    assert host == "temporal" and host in services
    assert port == temporal_frontend_port()
    assert port in {target for _, target in port_mappings(services["temporal"])}


def test_api_and_worker_share_namespace_and_task_queue(
    services: dict[str, dict[str, Any]],
) -> None:
    api, worker = (container_environment(services[name], REQUIRED_HOST) for name in PARLEY_SERVICES)
    for variable in (
        "TEMPORAL_ADDRESS",
        "TEMPORAL_NAMESPACE",
        "TEMPORAL_TASK_QUEUE",
        "DATABASE_URL",
    ):
        assert api.get(variable) == worker.get(variable), variable


@pytest.mark.parametrize("name", PARLEY_SERVICES)
def test_database_url_is_asyncpg_on_the_postgresql_service_with_an_account_it_creates(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    environment = container_environment(services[name], REQUIRED_HOST)
    url = make_url(environment["DATABASE_URL"])
    assert url.drivername == "postgresql+asyncpg"
    assert url.host == "postgresql" and url.host in services
    assert (url.port or POSTGRES_PORT) == POSTGRES_PORT
    roles, databases = postgres_accounts(services["postgresql"])
    assert url.username in roles, f"no role {url.username!r} is created"
    assert url.password == roles[url.username]
    assert url.database in databases, f"no database {url.database!r} is created"


def test_postgres_init_script_is_mounted_and_owns_parleys_database_by_parleys_role(
    services: dict[str, dict[str, Any]],
) -> None:
    scripts = list(postgres_init_scripts(services["postgresql"]))
    assert scripts, "mount an init script into /docker-entrypoint-initdb.d"
    for script in scripts:
        assert script.is_file(), f"{script} is mounted but missing"
    url = make_url(container_environment(services["api"], REQUIRED_HOST)["DATABASE_URL"])
    sql = "\n".join(script.read_text() for script in scripts)
    owner = re.search(rf"CREATE\s+DATABASE\s+\"?{url.database}\"?\s+OWNER\s+\"?(\w+)", sql, re.I)
    assert owner is not None and owner.group(1) == url.username


def test_postgresql_keeps_its_data_in_a_named_volume_and_has_a_pg_isready_healthcheck(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgresql = services["postgresql"]
    data_volumes = [
        str(volume).split(":")[0]
        for volume in postgresql.get("volumes") or []
        if str(volume).split(":")[1] == "/var/lib/postgresql/data"
    ]
    assert len(data_volumes) == 1
    assert data_volumes[0] in (compose.get("volumes") or {}), "declare it as a named volume"
    assert "pg_isready" in command_text(postgresql["healthcheck"]["test"])


def test_temporal_server_uses_the_postgresql_service_and_its_credentials(
    services: dict[str, dict[str, Any]],
) -> None:
    temporal = container_environment(services["temporal"], {})
    postgresql = container_environment(services["postgresql"], {})
    assert temporal["DB"] in AUTO_SETUP_POSTGRES_PLUGINS
    assert temporal["POSTGRES_SEEDS"] in services
    assert services[temporal["POSTGRES_SEEDS"]] is services["postgresql"]
    assert int(temporal["DB_PORT"]) == POSTGRES_PORT
    superuser = postgresql.get("POSTGRES_USER", "postgres")
    assert temporal["POSTGRES_USER"] == superuser
    assert temporal["POSTGRES_PWD"] == postgresql["POSTGRES_PASSWORD"]
    # auto-setup skips creating its database (DBNAME, default "temporal") when the name
    # equals the user's; the postgres image must then have created it.
    dbname = temporal.get("DBNAME", "temporal")
    if dbname == temporal["POSTGRES_USER"]:
        assert postgresql.get("POSTGRES_DB", superuser) == dbname


def test_temporal_ui_talks_to_the_temporal_frontend_and_is_published_on_the_ui_port(
    services: dict[str, dict[str, Any]],
) -> None:
    ui = services["temporal-ui"]
    environment = container_environment(ui, {})
    assert environment["TEMPORAL_ADDRESS"] == f"temporal:{temporal_frontend_port()}"
    assert "TEMPORAL_CORS_ORIGINS" in environment
    listening = int(environment.get("TEMPORAL_UI_PORT", UI_CONTAINER_PORT_DEFAULT))
    assert (UI_HOST_PORT, listening) in port_mappings(ui)


def test_api_listens_on_all_interfaces_and_publishes_parley_port(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    environment = container_environment(api, REQUIRED_HOST)
    assert environment["PARLEY_HOST"] == "0.0.0.0"
    port = int(environment.get("PARLEY_PORT", Settings.model_fields["port"].default))
    assert (port, port) in port_mappings(api)
    healthcheck = command_text(api.get("healthcheck", {}).get("test"))
    if healthcheck:
        assert f":{port}/health" in healthcheck


def test_api_runs_migrations_before_serving_and_worker_runs_the_worker(
    services: dict[str, dict[str, Any]],
) -> None:
    api_command = command_text(services["api"]["command"])
    assert re.search(r"parley migrate\s*&&\s*(?:exec\s+)?parley api", api_command), api_command
    assert parley_invocations(api_command) == ["migrate", "api"]
    assert parley_invocations(command_text(services["worker"]["command"])) == ["worker"]


def test_every_parley_subcommand_the_stack_runs_exists(
    services: dict[str, dict[str, Any]],
) -> None:
    used = {
        subcommand
        for name in PARLEY_SERVICES
        for subcommand in parley_invocations(command_text(services[name].get("command")))
    }
    assert used
    for subcommand in used:
        assert parley_subcommand_exists(subcommand), f"`parley {subcommand}` does not exist"
    assert not parley_subcommand_exists("no-such-command")


def test_temporal_setup_creates_every_search_attribute_with_its_type(
    services: dict[str, dict[str, Any]],
) -> None:
    script = command_text(services["temporal-setup"]["command"])
    assert "temporal operator search-attribute create" in script
    created = dict(re.findall(r"--name\s+(\w+)\s+--type\s+(\w+)", script))
    assert created == SEARCH_ATTRIBUTES


def test_temporal_setup_targets_the_temporal_frontend_and_parleys_namespace(
    services: dict[str, dict[str, Any]],
) -> None:
    setup = services["temporal-setup"]
    environment = container_environment(setup, {})
    script = command_text(setup["command"])
    address = re.search(r"--address[ =](\S+)", script)
    namespace = re.search(r"--namespace[ =](\S+)", script)
    # The temporal CLI reads TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE when the flags are absent.
    assert (address.group(1) if address else environment.get("TEMPORAL_ADDRESS")) == (
        f"temporal:{temporal_frontend_port()}"
    )
    parley_namespace = container_environment(services["api"], REQUIRED_HOST)["TEMPORAL_NAMESPACE"]
    assert (namespace.group(1) if namespace else environment.get("TEMPORAL_NAMESPACE")) == (
        parley_namespace
    )
    # ... and auto-setup creates that namespace.
    temporal = container_environment(services["temporal"], {})
    assert temporal.get("DEFAULT_NAMESPACE", "default") == parley_namespace


def test_temporal_setup_retries_until_the_server_answers_and_escapes_its_shell_variables(
    services: dict[str, dict[str, Any]],
) -> None:
    setup = services["temporal-setup"]
    # admin-tools' own entrypoint just sleeps; the script must replace it.
    assert "sh" in command_text(setup.get("entrypoint"))
    script = command_text(setup["command"])
    assert re.search(r"\b(until|while)\b", script) and re.search(r"\bsleep\b", script)
    # Compose would substitute (or reject) a single `$`: shell variables need `$$`.
    unescaped = re.findall(r"(?<!\$)\$(?!\$)", script.replace("$$", ""))
    assert not unescaped
    assert interpolate(script, {}) == script.replace("$$", "$")


def test_worker_is_given_longer_to_stop_than_its_shutdown_grace(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = services["worker"]
    environment = container_environment(worker, REQUIRED_HOST)
    grace = settings_in_container(monkeypatch, environment).worker_shutdown_seconds
    period = re.fullmatch(r"(\d+)s", str(worker.get("stop_grace_period", "")))
    assert period is not None, "the worker needs a stop_grace_period in seconds"
    assert int(period.group(1)) > grace
    assert worker.get("stop_signal", "SIGTERM") in {"SIGTERM", "SIGINT"}


def test_depends_on_conditions(services: dict[str, dict[str, Any]]) -> None:
    for name in PARLEY_SERVICES:
        conditions = depends_on(services[name])
        assert conditions.get("postgresql") == "service_healthy", name
        assert conditions.get("temporal") in {"service_started", "service_healthy"}, name
        assert conditions.get("temporal-setup") == "service_completed_successfully", name
    assert depends_on(services["temporal"]).get("postgresql") == "service_healthy"
    assert "temporal" in depends_on(services["temporal-setup"])
    assert "temporal" in depends_on(services["temporal-ui"])
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
            if condition == "service_completed_successfully":
                restart = str(services[dependency].get("restart", "no"))
                assert restart in {"no", "on-failure"}, f"{dependency} is not one-shot"


# --- the image --------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_console_script_parley_is_declared_and_resolves_to_a_callable(
    pyproject: dict[str, Any],
) -> None:
    target = pyproject["project"]["scripts"]["parley"]
    module, _, attribute = target.partition(":")
    assert callable(getattr(import_module(module), attribute))


def test_dockerfile_base_image_satisfies_requires_python(pyproject: dict[str, Any]) -> None:
    bases = [rest.split()[0] for keyword, rest in dockerfile_instructions() if keyword == "FROM"]
    assert bases and bases[-1].startswith("python:")
    assert bases[-1].endswith("-slim")
    version = re.match(r"python:(\d+\.\d+)", bases[-1])
    assert version is not None
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(f"{version.group(1)}.0")


def test_dockerfile_copies_and_installs_the_project_and_runs_as_non_root(
    pyproject: dict[str, Any],
) -> None:
    instructions = dockerfile_instructions()
    copies = [rest for keyword, rest in instructions if keyword == "COPY"]
    assert any(rest.split()[0] == "." for rest in copies) or (
        any("pyproject.toml" in rest for rest in copies)
        and any(rest.split()[0] == "src" for rest in copies)
    )
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.search(r"pip install (?:[^&]*\s)?\.(?:\s|$)", runs), "pip install . is missing"
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    cmd = [rest for keyword, rest in instructions if keyword == "CMD"][-1]
    words = yaml.safe_load(cmd) if cmd.startswith("[") else shlex.split(cmd)
    assert words[0] in pyproject["project"]["scripts"]
    assert words == ["parley", "api"]
    assert parley_subcommand_exists(words[1])


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image() -> None:
    patterns = {
        line.strip().strip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for required in (".venv", ".data", ".git", ".env"):
        assert required in patterns, required
    assert patterns & {"__pycache__", "**/__pycache__"}
