"""The one settings object: every environment variable Parley reads is declared here."""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, TypeAdapter, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from src.costs import DEFAULT_PRICES, ModelPrice
from src.domain import DEFAULT_OPENAI_MODEL, SCRIPTED_MODEL
from src.sealing.state_envelope import StateKey, dev_keys, parse_keys
from src.templates import DEFAULT_MAX_RENDERED_CHARS
from src.tools.mcp_commands import McpCommandAllowlist
from src.tools.url_guard import UrlAllowlist

_PRICE_TABLE = TypeAdapter(dict[str, ModelPrice])

LLMProvider = Literal["openai", "scripted"]


class Settings(BaseSettings):
    """Parley's configuration, read from the environment (and `.env` if present)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    data_dir: Path = Field(default=Path("./.data"), alias="PARLEY_DATA_DIR")
    temporal_address: str | None = Field(default=None, alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field(default="default", alias="TEMPORAL_NAMESPACE")
    temporal_task_queue: str = Field(default="parley", alias="TEMPORAL_TASK_QUEUE")
    temporal_tls: bool = Field(default=False, alias="TEMPORAL_TLS")
    temporal_tls_cert: Path | None = Field(default=None, alias="TEMPORAL_TLS_CERT")
    temporal_tls_key: Path | None = Field(default=None, alias="TEMPORAL_TLS_KEY")
    # A cluster whose certificate a private CA signed, and the name it was issued for when
    # that is not the host in TEMPORAL_ADDRESS.
    temporal_tls_ca: Path | None = Field(default=None, alias="TEMPORAL_TLS_CA")
    temporal_tls_server_name: str | None = Field(default=None, alias="TEMPORAL_TLS_SERVER_NAME")
    temporal_api_key: SecretStr | None = Field(default=None, alias="TEMPORAL_API_KEY")
    database_url_setting: str | None = Field(default=None, alias="DATABASE_URL")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    default_llm_setting: LLMProvider | None = Field(default=None, alias="PARLEY_LLM")
    default_model_setting: str | None = Field(default=None, alias="PARLEY_DEFAULT_MODEL")
    api_key: SecretStr | None = Field(default=None, alias="PARLEY_API_KEY")
    host: str = Field(default="127.0.0.1", alias="PARLEY_HOST")
    port: int = Field(default=8000, alias="PARLEY_PORT")
    min_ttl_seconds: int = Field(default=60, ge=1, alias="PARLEY_MIN_TTL_SECONDS")
    max_ttl_seconds: int = Field(default=86400, alias="PARLEY_MAX_TTL_SECONDS")
    default_ttl_seconds: int = Field(default=3600, alias="PARLEY_DEFAULT_TTL_SECONDS")
    # The Vapi face's bound for `expirationSeconds` (Vapi allows 30 days); native routes keep
    # PARLEY_MAX_TTL_SECONDS.
    vapi_max_ttl_seconds: int = Field(default=2_592_000, ge=1, alias="PARLEY_VAPI_MAX_TTL_SECONDS")
    max_message_chars: int = Field(default=16000, ge=1, alias="PARLEY_MAX_MESSAGE_CHARS")
    max_tool_steps: int = Field(default=8, ge=1, alias="PARLEY_MAX_TOOL_STEPS")
    # A session's LLM cost (USD, priced with PARLEY_MODEL_PRICES) past which it is answered
    # with the agent's budget message and ends, for agents that set no `budget_usd`.
    session_budget_usd: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, alias="PARLEY_SESSION_BUDGET_USD"
    )
    # How long a stateless turn request waits for its workflow (no worker: it would wait forever).
    text_chat_turn_timeout_seconds: float = Field(
        default=120.0, gt=0, alias="PARLEY_TEXT_CHAT_TURN_TIMEOUT_SECONDS"
    )
    # A stateless conversation's state is refused once it is older than this: a leaked or
    # forgotten state cannot continue a conversation for ever. Each turn issues a fresh one.
    state_max_age_seconds: float = Field(
        default=7 * 86400.0, gt=0, alias="PARLEY_STATE_MAX_AGE_SECONDS"
    )
    turns_per_run: int = Field(default=500, ge=1, le=1500, alias="PARLEY_TURNS_PER_RUN")
    # A session hands over to a new run (continue-as-new), even with messages queued, once its
    # history passes this fraction of the server's limits (50 MB, 51,200 events).
    history_handover_fraction: float = Field(
        default=0.5, gt=0, lt=1, alias="PARLEY_HISTORY_HANDOVER_FRACTION"
    )
    # Turn outcomes a session keeps by idempotency key (carried across continue-as-new) to
    # answer a retry at once; an older key is answered from the database.
    answered_keys_kept: int = Field(default=256, ge=1, le=10_000, alias="PARLEY_ANSWERED_KEYS_KEPT")
    llm_timeout_seconds: float = Field(default=60.0, gt=0, alias="PARLEY_LLM_TIMEOUT_SECONDS")
    # The offline scripted model streams its reply word by word, this far apart, so the demo
    # shows streaming as a real model would.
    scripted_word_delay_seconds: float = Field(
        default=0.04, ge=0, le=5, alias="PARLEY_SCRIPTED_WORD_DELAY_SECONDS"
    )
    max_cached_workflows: int = Field(default=1000, ge=0, alias="PARLEY_MAX_CACHED_WORKFLOWS")
    # On SIGTERM or SIGINT the worker stops taking work and lets calls in flight finish for
    # this long before cancelling them: the longest LLM or webhook-tool call (150 s) fits.
    worker_shutdown_seconds: float = Field(
        default=150.0, ge=0, alias="PARLEY_WORKER_SHUTDOWN_SECONDS"
    )
    tool_url_allowlist_setting: str = Field(default="", alias="PARLEY_TOOL_URL_ALLOWLIST")
    mcp_commands_setting: str = Field(default="", alias="PARLEY_MCP_COMMANDS")
    # Stdio MCP servers stay running between calls, one per account, command line and
    # environment (src/tools/mcp_stdio_pool.py): stopped after this long unused, and past
    # this many per worker the least recently used is stopped. 0 servers: one per call.
    mcp_stdio_idle_seconds: float = Field(
        default=300.0, gt=0, le=86_400, alias="PARLEY_MCP_STDIO_IDLE_SECONDS"
    )
    mcp_stdio_max_servers: int = Field(
        default=16, ge=0, le=1000, alias="PARLEY_MCP_STDIO_MAX_SERVERS"
    )
    tool_response_max_chars: int = Field(
        default=16_000, ge=100, alias="PARLEY_TOOL_RESPONSE_MAX_CHARS"
    )
    # MCP answers are JSON-RPC messages, read whole to be parsed: past this, refused.
    mcp_response_max_bytes: int = Field(
        default=4 * 1024 * 1024, ge=65_536, alias="PARLEY_MCP_RESPONSE_MAX_BYTES"
    )
    # Caps on what an agent config carries to every LLM call (and into its snapshot).
    max_agent_variables_bytes: int = Field(
        default=64 * 1024, ge=1024, alias="PARLEY_MAX_AGENT_VARIABLES_BYTES"
    )
    max_tool_schema_bytes: int = Field(
        default=64 * 1024, ge=1024, alias="PARLEY_MAX_TOOL_SCHEMA_BYTES"
    )
    max_rendered_template_chars: int = Field(
        default=DEFAULT_MAX_RENDERED_CHARS, ge=1000, alias="PARLEY_MAX_RENDERED_TEMPLATE_CHARS"
    )
    model_prices_setting: str = Field(default="", alias="PARLEY_MODEL_PRICES")
    webhook_retry_window_seconds: float = Field(
        default=86_400, gt=0, alias="PARLEY_WEBHOOK_RETRY_WINDOW_SECONDS"
    )
    webhook_retry_initial_seconds: float = Field(
        default=1.0, gt=0, alias="PARLEY_WEBHOOK_RETRY_INITIAL_SECONDS"
    )
    analysis_attempts: int = Field(default=3, ge=1, le=10, alias="PARLEY_ANALYSIS_ATTEMPTS")
    state_keys_setting: SecretStr | None = Field(default=None, alias="PARLEY_STATE_KEYS")
    payload_keys_setting: SecretStr | None = Field(default=None, alias="PARLEY_PAYLOAD_KEYS")
    secret_keys_setting: SecretStr | None = Field(default=None, alias="PARLEY_SECRET_KEYS")
    # "token": the operator credential PARLEY_CODEC_TOKEN (never an account's API key: the
    # codec decrypts every tenant's payloads); "none": no credential, only on a loopback host.
    codec_auth: Literal["token", "none"] = Field(default="token", alias="PARLEY_CODEC_AUTH")
    codec_token: SecretStr | None = Field(default=None, alias="PARLEY_CODEC_TOKEN")
    # "production" refuses to start without the key rings instead of generating dev keys.
    environment: Literal["development", "production"] = Field(
        default="development", alias="PARLEY_ENVIRONMENT"
    )
    codec_cors_origins_setting: str = Field(default="", alias="PARLEY_CODEC_CORS_ORIGINS")
    worker_metrics_address: str | None = Field(default=None, alias="PARLEY_WORKER_METRICS_ADDRESS")
    tracing: Literal["off", "console", "otlp"] = Field(default="off", alias="PARLEY_TRACING")
    log_format: Literal["text", "json"] = Field(default="text", alias="PARLEY_LOG_FORMAT")
    temporal_ui_url: str | None = Field(default=None, alias="PARLEY_TEMPORAL_UI_URL")
    # The widget key of the demo agent, which `parley dev` creates; /demo shows the widget
    # with it (in development only).
    demo_widget_key: SecretStr | None = Field(default=None, alias="PARLEY_DEMO_WIDGET_KEY")
    dev_temporal_port: int = Field(default=7233, alias="PARLEY_DEV_TEMPORAL_PORT")
    dev_ui_port: int = Field(default=8233, alias="PARLEY_DEV_UI_PORT")
    # The front door (src/api/front_door.py): what a request may cost before it is refused.
    max_request_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, alias="PARLEY_MAX_REQUEST_BYTES"
    )
    max_transcript_messages: int = Field(default=2000, ge=1, alias="PARLEY_MAX_TRANSCRIPT_MESSAGES")
    max_transcript_bytes: int = Field(
        default=1024 * 1024, ge=1024, alias="PARLEY_MAX_TRANSCRIPT_BYTES"
    )
    rate_limit_per_minute: int = Field(default=600, ge=0, alias="PARLEY_RATE_LIMIT_PER_MINUTE")
    # Publishable widget keys (pw_...): requests a minute per visitor and per client IP
    # address (each API process counts on its own; 0 turns one off). Behind a proxy, the IP is
    # the one uvicorn's --forwarded-allow-ips trusts.
    widget_rate_per_visitor_per_minute: int = Field(
        default=30, ge=0, alias="PARLEY_WIDGET_RATE_PER_VISITOR_PER_MINUTE"
    )
    widget_rate_per_ip_per_minute: int = Field(
        default=120, ge=0, alias="PARLEY_WIDGET_RATE_PER_IP_PER_MINUTE"
    )
    # The base URL the outside world (Twilio) reaches this API at, e.g. a tunnel's
    # https://abc.ngrok.app. Twilio signs each webhook over the URL it posted to, so behind a
    # proxy this must be the public URL, not the local one; unset: http://PARLEY_HOST:PORT.
    public_url_setting: str | None = Field(default=None, alias="PARLEY_PUBLIC_URL")
    # Where the Twilio REST API is (tests point it at a fake Twilio on loopback).
    twilio_api_url: str = Field(default="https://api.twilio.com", alias="PARLEY_TWILIO_API_URL")
    max_active_sessions: int = Field(default=1000, ge=0, alias="PARLEY_MAX_ACTIVE_SESSIONS")
    allowed_models_setting: str = Field(default="", alias="PARLEY_ALLOWED_MODELS")
    max_output_tokens: int = Field(default=16_384, ge=1, alias="PARLEY_MAX_OUTPUT_TOKENS")
    api_key_cache_seconds: float = Field(default=30.0, ge=0, alias="PARLEY_API_KEY_CACHE_SECONDS")
    metrics_cache_seconds: float = Field(default=15.0, ge=0, alias="PARLEY_METRICS_CACHE_SECONDS")

    @field_validator("public_url_setting", "twilio_api_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, not {url!r}")
        return url

    @model_validator(mode="after")
    def _tables_parse(self) -> Settings:
        # Fail at startup, not at the first request that needs them.
        self.model_prices  # noqa: B018
        self.mcp_commands  # noqa: B018
        if self.state_keys_setting is not None:
            parse_keys(self.state_keys_setting.get_secret_value())
        self.payload_keys()
        if self.secret_keys_setting is not None:
            parse_keys(self.secret_keys_setting.get_secret_value())
        return self

    @model_validator(mode="after")
    def _production_has_its_keys(self) -> Settings:
        if self.environment == "production":
            missing = [
                alias
                for alias, value in (
                    ("PARLEY_PAYLOAD_KEYS", self.payload_keys_setting),
                    ("PARLEY_STATE_KEYS", self.state_keys_setting),
                    ("PARLEY_SECRET_KEYS", self.secret_keys_setting),
                )
                if value is None or not value.get_secret_value().strip()
            ]
            if missing:
                raise ValueError(
                    f"PARLEY_ENVIRONMENT=production needs {', '.join(missing)} "
                    "(`kid:base64url 32-byte key`, comma-separated, the first encrypts; "
                    "make one with `parley new-key`)"
                )
        return self

    @model_validator(mode="after")
    def _tls_client_certificate_is_whole(self) -> Settings:
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            raise ValueError("mTLS needs both TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY")
        return self

    @model_validator(mode="after")
    def _codec_without_credential_only_on_loopback(self) -> Settings:
        if self.codec_auth == "none" and not is_loopback(self.host):
            raise ValueError(
                "PARLEY_CODEC_AUTH=none serves every tenant's decrypted payloads to anyone "
                f"who reaches it: allowed only with a loopback PARLEY_HOST, not {self.host!r}; "
                "set PARLEY_CODEC_TOKEN instead"
            )
        if self.codec_token is not None and len(self.codec_token.get_secret_value()) < 24:
            raise ValueError("PARLEY_CODEC_TOKEN must be at least 24 characters")
        return self

    @model_validator(mode="after")
    def _ttl_bounds_are_ordered(self) -> Settings:
        if not self.min_ttl_seconds <= self.default_ttl_seconds <= self.max_ttl_seconds:
            raise ValueError(
                "need PARLEY_MIN_TTL_SECONDS <= PARLEY_DEFAULT_TTL_SECONDS "
                "<= PARLEY_MAX_TTL_SECONDS"
            )
        return self

    @cached_property
    def database_url(self) -> str:
        if self.database_url_setting:
            return self.database_url_setting
        return f"sqlite+aiosqlite:///{(self.data_dir / 'parley.db').resolve()}"

    @property
    def tool_url_allowlist(self) -> UrlAllowlist:
        return UrlAllowlist.parse(self.tool_url_allowlist_setting.split(","))

    @property
    def model_prices(self) -> dict[str, ModelPrice]:
        """The default price table with PARLEY_MODEL_PRICES (JSON: model → {"prompt",
        "completion"} in USD per million tokens) on top."""
        overrides = _PRICE_TABLE.validate_json(self.model_prices_setting or "{}")
        return {**DEFAULT_PRICES, **overrides}

    def state_keys(self) -> list[StateKey]:
        """Keys for stateless-conversation states: PARLEY_STATE_KEYS (`kid:base64`, first one
        seals), or else a key generated once in the data dir (one machine only)."""
        if self.state_keys_setting is not None:
            return parse_keys(self.state_keys_setting.get_secret_value())
        return dev_keys(self.data_dir)

    def payload_keys(self) -> list[StateKey]:
        """AES-256 keys for payloads in Temporal history (`kid:base64,...`; first encrypts);
        empty when PARLEY_PAYLOAD_KEYS is unset: payloads are then stored in clear."""
        if self.payload_keys_setting is None:
            return []
        return parse_keys(self.payload_keys_setting.get_secret_value())

    def secret_keys(self) -> list[StateKey]:
        """Keys for tenant secrets at rest (webhook secrets, tool headers): PARLEY_SECRET_KEYS,
        or else a key generated once in the data dir (development only)."""
        if self.secret_keys_setting is not None:
            return parse_keys(self.secret_keys_setting.get_secret_value())
        return dev_keys(self.data_dir, "secret-keys")

    @property
    def codec_cors_origins(self) -> list[str]:
        return [o.strip() for o in self.codec_cors_origins_setting.split(",") if o.strip()]

    @property
    def allowed_models(self) -> frozenset[str]:
        """Model names agents may use; empty allows any."""
        return frozenset(m.strip() for m in self.allowed_models_setting.split(",") if m.strip())

    @property
    def mcp_commands(self) -> McpCommandAllowlist:
        """The stdio command lines MCP servers may run: PARLEY_MCP_COMMANDS, a JSON list of argv
        patterns with `{name}` holes (see src/tools/mcp_commands.py), or a comma list of bare
        commands, each allowed with no arguments. Empty: no stdio servers."""
        return McpCommandAllowlist.parse(self.mcp_commands_setting)

    @property
    def public_url(self) -> str:
        """PARLEY_PUBLIC_URL without a trailing slash; else this API's own address."""
        if self.public_url_setting:
            return self.public_url_setting.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @property
    def temporal_target(self) -> str:
        return self.temporal_address or f"localhost:{self.dev_temporal_port}"

    @property
    def default_llm(self) -> LLMProvider:
        if self.default_llm_setting:
            return self.default_llm_setting
        if self.openai_api_key or self.openai_base_url:
            return "openai"
        return "scripted"

    @property
    def default_model_name(self) -> str:
        """PARLEY_DEFAULT_MODEL, else the default provider's own: the demo on the scripted
        model is not shown, nor priced, as a paid model."""
        if self.default_model_setting:
            return self.default_model_setting
        return SCRIPTED_MODEL if self.default_llm == "scripted" else DEFAULT_OPENAI_MODEL


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings() -> Settings:
    return Settings()
