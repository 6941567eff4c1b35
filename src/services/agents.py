"""Agents: versioned configurations owned by an account. Every update is a new immutable
version; delete is soft, so sessions keep the snapshot they were opened with. Secrets are
sealed in storage (src/sealing/secret_box.py)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from src.config import Settings
from src.db.queries import latest_versions, version_row
from src.db.snapshots import SnapshotStore
from src.db.tables import AgentVersion
from src.domain import (
    FROM_STORAGE,
    AgentPatch,
    AgentSnapshot,
    AgentSpec,
    HandoffTool,
    McpTools,
    ModelConfig,
    WebhookTool,
)
from src.errors import Conflict, InvalidInput, NotFound, describe_validation_error
from src.sealing.secret_box import SecretBox, SecretUnreadable, erase_agent_secrets
from src.tools.json_schemas import schema_bytes
from src.tools.url_guard import UrlRefused, check_literal_host

INLINE_AGENT_PREFIX = "inline-"


class AgentRecord(BaseModel):
    id: str
    version: int
    spec: AgentSpec
    created_time: datetime


class AgentService:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        snapshots: SnapshotStore,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._secrets = SecretBox(settings.secret_keys())
        self._snapshots = snapshots

    async def create(self, account_id: str, spec: AgentSpec) -> AgentRecord:
        self.check_outbound(spec)
        return await self._insert(account_id, f"agent-{uuid.uuid4()}", 1, spec)

    async def update(self, account_id: str, agent_id: str, patch: AgentPatch) -> AgentRecord:
        current = await self.get(account_id, agent_id)
        try:
            spec = patch.apply(current.spec, merge_variables=False)
        except ValueError as error:
            raise InvalidInput(
                f"invalid agent update: {describe_validation_error(error)}"
            ) from None
        self.check_outbound(spec)
        try:
            return await self._insert(account_id, agent_id, current.version + 1, spec)
        except IntegrityError:
            raise Conflict("the agent was updated concurrently; retry the update") from None

    async def delete(self, account_id: str, agent_id: str, purge: bool = False) -> None:
        """Soft delete; with `purge`, the secrets of every version are erased too, and those
        of the snapshots no active session runs on (active sessions keep working). An agent
        deleted earlier without `purge` can still be purged."""
        if not purge:
            await self.get(account_id, agent_id)
        async with self._sessions.begin() as db:
            await db.execute(
                update(AgentVersion)
                .where(AgentVersion.id == agent_id, AgentVersion.account_id == account_id)
                .values(deleted=True)
            )
            if purge:
                versions = await db.scalars(
                    select(AgentVersion).where(
                        AgentVersion.id == agent_id, AgentVersion.account_id == account_id
                    )
                )
                rows = versions.all()
                if not rows:
                    raise NotFound(f"agent {agent_id!r} not found")
                for row in rows:
                    row.spec = erase_agent_secrets(row.spec)
        if purge:
            await self._snapshots.erase_unused_secrets(account_id, agent_id)

    async def reseal(self, account_id: str | None = None) -> tuple[int, int]:
        """Seal the secrets of every version and snapshot (of one account, or all) with the
        first key. Returns (rows changed, rows left as they were because no key opens them)."""
        changed = unreadable = 0
        query = select(AgentVersion)
        if account_id is not None:
            query = query.where(AgentVersion.account_id == account_id)
        async with self._sessions.begin() as db:
            for row in (await db.scalars(query)).all():
                try:
                    spec = self._secrets.reseal_agent(row.spec)
                except SecretUnreadable:
                    unreadable += 1
                    continue
                if spec != row.spec:
                    row.spec = spec
                    changed += 1
        snapshots_changed, snapshots_unreadable = await self._snapshots.reseal(account_id)
        return changed + snapshots_changed, unreadable + snapshots_unreadable

    async def get(self, account_id: str, agent_id: str, version: int | None = None) -> AgentRecord:
        async with self._sessions() as db:
            row = await version_row(db, AgentVersion, account_id, agent_id, version)
        if row is None:
            which = f"version {version} of agent" if version is not None else "agent"
            raise NotFound(f"{which} {agent_id!r} not found")
        return self._record(row)

    async def list(
        self, account_id: str, limit: int, cursor: str | None
    ) -> tuple[list[AgentRecord], str | None]:
        async with self._sessions() as db:
            rows, next_cursor = await latest_versions(db, AgentVersion, account_id, limit, cursor)
        return [self._record(row) for row in rows], next_cursor

    async def resolve(
        self,
        account_id: str,
        agent_id: str | None,
        inline: AgentSpec | None,
        overrides: AgentPatch | None,
        *,
        squad_member: bool = False,
    ) -> AgentSnapshot:
        """The agent a session or conversation runs with: a stored agent's latest version or
        an inline config, with overrides applied, frozen with the server's default model."""
        if (agent_id is None) == (inline is None):
            raise InvalidInput("give exactly one of `agent_id` or an inline `agent`")
        if agent_id is not None:
            record = await self.get(account_id, agent_id)  # unknown: 404
            spec, version = record.spec, record.version
        else:
            assert inline is not None
            spec, version = inline, 0
            digest = hashlib.sha256(inline.model_dump_json().encode()).hexdigest()
            agent_id = f"{INLINE_AGENT_PREFIX}{digest[:24]}"
        if overrides is not None:
            try:
                spec = overrides.apply(spec, merge_variables=True)
            except ValueError as error:
                message = describe_validation_error(error)
                raise InvalidInput(f"invalid agent_overrides: {message}") from None
        self.check_outbound(spec)
        if not squad_member and any(isinstance(tool, HandoffTool) for tool in spec.tools):
            raise InvalidInput(
                "the agent has a handoff tool, so it runs only as a member of a squad "
                "(POST /chats with squad_id)"
            )
        model = spec.model or ModelConfig(
            provider=self._settings.default_llm, name=self._settings.default_model_name
        )
        return AgentSnapshot(id=agent_id, version=version, spec=spec, model=model)

    def check_outbound(self, spec: AgentSpec) -> None:
        """Refuse, naming the field, what the server would refuse anyway: URLs, commands, TTLs,
        models off the allow-list, output budgets over the ceiling and sizes."""
        self._check_model(spec.model)
        self._check_sizes(spec)
        low, high = self._settings.min_ttl_seconds, self._settings.max_ttl_seconds
        ttl = spec.default_ttl_seconds
        if ttl is not None and not low <= ttl <= high:
            raise InvalidInput(f"default_ttl_seconds must be between {low} and {high}; got {ttl}")
        handoff = spec.human_handoff
        for name in ("wait_seconds", "operator_idle_seconds"):
            seconds = getattr(handoff, name) if handoff else None
            if seconds is not None and seconds < low:
                raise InvalidInput(f"human_handoff.{name} must be at least {low}; got {seconds}")
        allowlist = self._settings.tool_url_allowlist
        urls = [("webhook.url", spec.webhook.url)] if spec.webhook else []
        for index, tool in enumerate(spec.tools):
            if isinstance(tool, WebhookTool):
                urls.append((f"tools[{index}].url", tool.url))
            elif isinstance(tool, McpTools) and tool.server.url is not None:
                urls.append((f"tools[{index}].server.url", tool.server.url))
            elif isinstance(tool, McpTools) and tool.server.command:
                command = tool.server.command
                if not self._settings.mcp_commands.allows(command):
                    raise InvalidInput(
                        f"tools[{index}].server.command: the command line "
                        f"{json.dumps(command)} is not on the server's MCP command "
                        "allow-list (PARLEY_MCP_COMMANDS)"
                    )
        for field, url in urls:
            try:
                check_literal_host(url, allowlist)
            except UrlRefused as error:
                raise InvalidInput(f"{field}: {error}") from None

    def _check_model(self, model: ModelConfig | None) -> None:
        allowed = self._settings.allowed_models
        if model is not None and allowed and model.name not in allowed:
            raise InvalidInput(
                f"model.name: {model.name!r} is not on the server's model allow-list "
                f"(PARLEY_ALLOWED_MODELS): {', '.join(sorted(allowed))}"
            )
        ceiling = self._settings.max_output_tokens
        if model is not None and model.max_tokens is not None and model.max_tokens > ceiling:
            raise InvalidInput(
                f"model.max_tokens: {model.max_tokens} is over the server's ceiling of "
                f"{ceiling} (PARLEY_MAX_OUTPUT_TOKENS)"
            )

    def _check_sizes(self, spec: AgentSpec) -> None:
        variables = (self._settings.max_agent_variables_bytes, "PARLEY_MAX_AGENT_VARIABLES_BYTES")
        schemas = (self._settings.max_tool_schema_bytes, "PARLEY_MAX_TOOL_SCHEMA_BYTES")
        outputs = spec.analysis.structured_outputs if spec.analysis else []
        capped = [
            ("variables", spec.variables, variables),
            *(
                (f"tools[{index}].parameters", tool.parameters, schemas)
                for index, tool in enumerate(spec.tools)
                if isinstance(tool, WebhookTool)
            ),
            *(
                (f"analysis.structured_outputs[{index}].schema", output.schema_, schemas)
                for index, output in enumerate(outputs)
            ),
        ]
        for field, value, (limit, setting) in capped:
            size = schema_bytes(value)
            if size > limit:
                raise InvalidInput(
                    f"{field}: {size:,} bytes of JSON; the limit is {limit:,} ({setting})"
                )

    async def _insert(
        self, account_id: str, agent_id: str, version: int, spec: AgentSpec
    ) -> AgentRecord:
        row = AgentVersion(
            id=agent_id,
            version=version,
            account_id=account_id,
            name=spec.name,
            spec=self._secrets.seal_agent(json.loads(spec.model_dump_json())),
            created_time=datetime.now(UTC),
            deleted=False,
        )
        async with self._sessions.begin() as db:
            db.add(row)
        return AgentRecord(id=agent_id, version=version, spec=spec, created_time=row.created_time)

    def _record(self, row: AgentVersion) -> AgentRecord:
        return AgentRecord(
            id=row.id,
            version=row.version,
            spec=AgentSpec.model_validate(self._secrets.open_agent(row.spec), context=FROM_STORAGE),
            created_time=row.created_time,
        )
