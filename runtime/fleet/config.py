"""The fleet config file, ``dialplan.toml``: how a fleet of workers serves the bots.

    [worker]          agent name, bots directory, capacity, hot reload
    [results]         where call records go (SQLite outbox per worker, or PostgreSQL)
    [config_endpoint] per-call settings from an HTTP endpoint (optional)
    [[trunks.inbound]] / [[trunks.outbound]]   SIP trunks `dialplan provision` keeps in LiveKit
    [[routes]]        called number → bot: one dispatch rule each

Bots live in their own files; this file never describes a bot. Unknown keys are errors,
and every error names the file, the key and the fix, like a bot file's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from runtime import toml_parser
from runtime.durations import Duration
from runtime.errors import DialplanError, Problem
from runtime.phone_numbers import phone_number
from runtime.secrets import SecretRef
from runtime.toml_problems import located_problem, toml_problem

DEFAULT_FLEET_CONFIG = "dialplan.toml"
DEFAULT_AGENT_NAME = "dialplan"
ROOM_PREFIX = "call_"  # every room dialplan creates or has a rule create starts with this


class FleetConfigInvalid(DialplanError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PhoneNumber = Annotated[str, AfterValidator(phone_number)]


class WorkerSettings(_Strict):
    agent_name: str = Field(
        DEFAULT_AGENT_NAME, description="the name dispatch rules and outbound calls ask for"
    )
    bots: Path = Field(Path("bots"), description="the bots directory (prompts/ beside it)")
    max_concurrent_calls: int = Field(
        20, ge=1, description="calls one worker takes at once; beyond it the worker is full"
    )
    watch: bool = Field(False, description="hot-reload bot and template changes (`--watch`)")
    drain_timeout: Duration = Field(
        1800.0, description="on SIGTERM, how long calls in progress may go on"
    )
    host: str = Field("", description="health-check HTTP server address (all interfaces)")
    port: int = Field(8081, ge=0, le=65535, description="health-check HTTP port; 0: any free one")


class ResultsSettings(_Strict):
    outbox: Path = Field(Path("dialplan-outbox.db"), description="SQLite outbox (per worker)")
    postgres: SecretRef | None = Field(
        None, description='a shared PostgreSQL results store: "${env:DIALPLAN_RESULTS_DSN}"'
    )
    webhooks: list[str] = Field(default_factory=list, description="POST every record here")
    webhook_secret: SecretRef | None = Field(None, description="HMAC key for the signature")
    jsonl: Path | None = Field(None, description="also append every record to this file")


class ConfigEndpointSettings(_Strict):
    url: str = Field(description="POSTed for every call; answers variables and overrides")
    timeout: Duration = Field(2.0, description="per attempt")
    retries: int = Field(2, ge=0, le=10, description="extra attempts after a 5xx or a timeout")
    retry_delay: Duration = Field(0.2, description="before the first retry; doubles each time")
    rejected_message: str = Field(
        "Sorry, we can't take this call right now. Goodbye.",
        description="said when the endpoint answers 404 (its `message` wins when it has one)",
    )
    auth_token: SecretRef | None = Field(None, description="sent as `Authorization: Bearer`")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


class InboundTrunk(_Strict):
    name: str
    numbers: list[PhoneNumber] = Field(description="the numbers this trunk answers (E.164)")
    allowed_addresses: list[str] = Field(
        default_factory=list, description="carrier IPs/CIDRs allowed to send calls"
    )
    allowed_numbers: list[str] = Field(default_factory=list, description="caller numbers allowed")
    auth_username: str = ""
    auth_password: SecretRef | None = None
    headers_to_attributes: dict[str, str] = Field(
        default_factory=dict,
        description="SIP header → participant attribute, e.g. X-Customer-Id = customer_id",
    )
    krisp: bool = False


class OutboundTrunk(_Strict):
    name: str
    address: str = Field(description="the carrier's SIP host, e.g. sip.carrier.example")
    numbers: list[PhoneNumber] = Field(description="caller ids this trunk may present (E.164)")
    transport: Literal["auto", "udp", "tcp", "tls"] = "auto"
    auth_username: str = ""
    auth_password: SecretRef | None = None
    headers: dict[str, str] = Field(default_factory=dict, description="sent on every INVITE")


class Trunks(_Strict):
    inbound: list[InboundTrunk] = Field(default_factory=list)
    outbound: list[OutboundTrunk] = Field(default_factory=list)


class Route(_Strict):
    number: PhoneNumber = Field(description="the called number (E.164)")
    bot: str = Field(description="the bot that answers it")
    trunk: str | None = Field(None, description="inbound trunk name; default: the one listing it")
    variables: dict[str, Any] = Field(default_factory=dict, description="fixed call variables")


class FleetConfig(_Strict):
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    results: ResultsSettings = Field(default_factory=ResultsSettings)
    config_endpoint: ConfigEndpointSettings | None = None
    trunks: Trunks = Field(default_factory=Trunks)
    routes: list[Route] = Field(default_factory=list)
    path: Path | None = Field(None, exclude=True, description="where it was read from")

    @model_validator(mode="after")
    def _consistent(self) -> FleetConfig:
        inbound = {t.name: t for t in self.trunks.inbound}
        seen: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.number in seen:
                raise ValueError(f"routes[{index}]: {route.number} is routed twice")
            seen.add(route.number)
            if route.trunk is not None and route.trunk not in inbound:
                known = ", ".join(inbound) or "none"
                raise ValueError(
                    f"routes[{index}].trunk: no inbound trunk named {route.trunk!r} "
                    f"(inbound trunks: {known})"
                )
        for kind, trunks in (("inbound", self.trunks.inbound), ("outbound", self.trunks.outbound)):
            names = [t.name for t in trunks]
            for name in names:
                if names.count(name) > 1:
                    raise ValueError(f"trunks.{kind}: two trunks are named {name!r}")
        return self

    def route_for(self, called_number: str) -> Route | None:
        wanted = called_number.replace(" ", "").replace("-", "")
        for route in self.routes:
            if route.number == wanted or route.number.lstrip("+") == wanted.lstrip("+"):
                return route
        return None

    def inbound_trunk_for(self, route: Route) -> InboundTrunk | None:
        for trunk in self.trunks.inbound:
            if trunk.name == route.trunk or (route.trunk is None and route.number in trunk.numbers):
                return trunk
        return None

    def outbound_trunk(self, name: str | None) -> OutboundTrunk | None:
        if name is None:
            return self.trunks.outbound[0] if self.trunks.outbound else None
        return next((t for t in self.trunks.outbound if t.name == name), None)

    def resolve_path(self, path: Path) -> Path:
        """Paths in the file are relative to the file, not to where dialplan runs."""
        if path.is_absolute() or self.path is None:
            return path
        return self.path.parent / path


def load_fleet_config(path: Path | None = None, *, required: bool = False) -> FleetConfig:
    """Read ``dialplan.toml`` (or ``path``). A missing default file means the defaults;
    a missing file named on purpose (``required``) is an error."""
    target = path or Path(DEFAULT_FLEET_CONFIG)
    if not target.exists():
        if required or path is not None:
            raise FleetConfigInvalid(
                [Problem(target, "no such file", fix="create it or pass --config PATH")]
            )
        return FleetConfig()
    try:
        data = toml_parser.loads(target.read_text(encoding="utf-8"))
    except toml_parser.TOMLDecodeError as exc:
        raise FleetConfigInvalid([toml_problem(target, exc)]) from None
    try:
        config = FleetConfig.model_validate(data)
    except ValidationError as exc:
        raise FleetConfigInvalid(
            [located_problem(target, "", FleetConfig, error) for error in exc.errors()]
        ) from None
    return config.model_copy(update={"path": target})
