"""All settings in one pydantic model: env ``RAYTASKS_*``, a TOML file, keyword overrides.

Precedence, highest first: keyword overrides, environment, the TOML file
(``RAYTASKS_CONFIG`` or ``./raytasks.toml``), defaults. Settings are passed
explicitly to every actor; nothing deep inside reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class TaskTypeSettings(BaseModel):
    """Per-type overrides of the defaults below.

    A type's executor pool grows with its queue between ``min_workers`` and
    ``max_workers`` and shrinks after ``idle_timeout_s`` without work, keeping
    ``warm_workers`` idle executors ready above its busy ones; ``workers`` fixes
    its size (min = max = workers).
    """

    workers: int | None = Field(default=None, ge=0, description="a fixed pool size")
    min_workers: int | None = Field(default=None, ge=0)
    max_workers: int | None = Field(default=None, ge=0)
    idle_timeout_s: float | None = Field(default=None, gt=0,
                                         description="an idle executor above min_workers "
                                         "is retired after this long")
    warm_workers: int | None = Field(
        default=None, ge=0, description="idle executors the pool keeps ready above its "
        "busy ones (never above max_workers), so a burst starts at once instead of "
        "waiting for a worker process; None: warm_workers_per_type")
    num_cpus: float | None = Field(default=None, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)
    max_retries: int | None = Field(default=None, ge=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    preemptible: bool | None = Field(
        default=None, description="whether the scheduler may preempt this type's running "
        "tasks for a deadline; None: as the type was registered (built-in training and "
        "backtests are)")
    preempt_grace_s: float | None = Field(
        default=None, ge=0, description="how long a preempted attempt has to save its "
        "checkpoint and stop before its process is replaced; None: preempt_grace_s")
    max_memory_mb: float | None = Field(
        default=None, gt=0, description="the most resident memory (MiB) an attempt's "
        "executor process may hold; past it the attempt ends FAILED, reason out_of_memory, "
        "with its peak, and the process is replaced (raytasks.memory); None: no ceiling "
        "(the node guard and Ray's memory monitor still apply)")
    cache: bool | None = Field(
        default=None, description="whether this type's tasks take a finished task's result "
        "when their inputs are unchanged (raytasks.cache); a task's own ``cache`` wins; "
        "None: off")
    retry_oom: bool = Field(
        default=False, description="whether an attempt ended for memory is retried (within "
        "max_retries). Off by default: the same parameters allocate the same memory again, "
        "so a retry fails the same way and holds a node's memory meanwhile")


EventName = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "progress"]


def _finished_events() -> list[EventName]:
    return ["COMPLETED", "FAILED", "CANCELLED"]


def _completion_events() -> list[EventName]:
    return ["COMPLETED", "FAILED"]


class ChannelRule(BaseModel):
    """Which events a channel sends: statuses (or ``progress``), priorities, how often."""

    events: list[EventName] = Field(default_factory=_finished_events)
    priorities: list[int] = Field(default_factory=lambda: [1, 2, 3])
    min_interval_s: float = Field(default=0.0, ge=0,
                                  description="progress events of one task at most this often")


class WebhookTarget(ChannelRule):
    url: str
    secret: SecretStr
    max_attempts: int = Field(default=8, ge=1)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    timeout_s: float = Field(default=10.0, gt=0)


class EmailSettings(ChannelRule):
    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = Field(default=None, description="CA bundle to verify the server "
                                                     "(default: the system's)")
    sender: str = "raytasks@localhost"
    recipients: list[str] = Field(default_factory=list,
                                  description="always notified; tasks may add their own")
    allow_domains: list[str] = Field(
        default_factory=list, description="a task's own notify addresses must be in one of "
        "these domains (or in allow_addresses); with both empty, tasks cannot add recipients")
    allow_addresses: list[str] = Field(default_factory=list,
                                       description="single addresses a task may notify")
    max_attempts: int = Field(default=5, ge=1, description="tries of one email before it is "
                              "dead-lettered in the delivery log")
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=300.0, ge=0)
    events: list[EventName] = Field(default_factory=_completion_events)
    rate_limit_count: int = Field(default=10, ge=1, description="emails per recipient ...")
    rate_limit_window_s: float = Field(default=300.0, gt=0, description="... per window; "
                                       "then one digest at the end of the window")
    timeout_s: float = Field(default=10.0, gt=0)


class NotifySettings(BaseModel):
    webhooks: list[WebhookTarget] = Field(default_factory=list)
    email: EmailSettings | None = None
    ws_progress_interval_s: float = Field(default=0.5, ge=0,
                                          description="WebSocket progress throttle per task")
    allow_hosts: list[str] = Field(default_factory=list,
                                   description="when set, webhooks may only go to these hosts")
    deny_hosts: list[str] = Field(default_factory=lambda: [
        "metadata.google.internal", "metadata.tencentyun.com", "metadata"])
    deny_networks: list[str] = Field(default_factory=lambda: [
        "169.254.0.0/16",      # link-local: AWS, GCP, Azure, Huawei Cloud metadata
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "fd00:ec2::254/128",   # AWS metadata over IPv6
        "0.0.0.0/8",
    ])


RESOURCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class DataSourceSettings(BaseModel):
    """A named source of daily bars; tasks name it, only the operator says where it is."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["synthetic", "csv", "qlib", "tushare", "akshare", "baostock"]
    path: Path | None = Field(default=None, description="kind=csv: a directory of "
                              "<code>.csv or <code>.parquet files; kind=qlib: a Qlib data "
                              "directory (calendars/, instruments/, features/)")
    token: SecretStr | None = Field(default=None, description="kind=tushare: the API token")

    @model_validator(mode="after")
    def _complete(self) -> DataSourceSettings:
        if self.kind in ("csv", "qlib") and self.path is None:
            raise ValueError(f"a {self.kind} data source needs a path")
        if self.kind == "tushare" and self.token is None:
            raise ValueError("a tushare data source needs a token")
        return self


def _builtin_sources() -> dict[str, DataSourceSettings]:
    return {"synthetic": DataSourceSettings(kind="synthetic")}


class ResourceSettings(BaseModel):
    """Named server resources. Task parameters refer to these by name, never by path.

    Each owner's writes go under ``<root>/owners/<owner>``; tasks of trusted Ray
    clients (no owner) use ``<root>/shared``. ``bar_stores["market"]`` and
    ``model_registries["models"]`` default to ``<data_dir>/market`` and
    ``<data_dir>/models``; ``data_sources["synthetic"]`` is always there.
    """

    model_config = ConfigDict(extra="forbid")

    data_sources: dict[str, DataSourceSettings] = Field(default_factory=_builtin_sources)
    bar_stores: dict[str, Path] = Field(default_factory=dict,
                                        description="name -> root of a Parquet bar store")
    model_registries: dict[str, Path] = Field(default_factory=dict,
                                              description="name -> root of a model registry")

    def with_defaults(self, data_dir: Path) -> ResourceSettings:
        """These resources plus the built-in names, the defaults under ``data_dir``."""
        return ResourceSettings(
            data_sources={**_builtin_sources(), **self.data_sources},
            bar_stores={"market": data_dir / "market", **self.bar_stores},
            model_registries={"models": data_dir / "models", **self.model_registries})


class ApiToken(BaseModel):
    """A bearer token, stored as its SHA-256 hex digest, bound to an owner."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    owner: str
    role: Literal["user", "admin"] = "user"
    scopes: list[Literal["read", "submit", "admin"]] | None = Field(
        default=None, description="what the token may do: read (dashboards, monitoring), "
        "submit (create and change its owner's tasks and schedules), admin (every owner's, "
        "and the audit trail); None: role user is read and submit, role admin all three")
    task_types: list[str] | None = Field(
        default=None, max_length=100, description="with submit: only these task types "
        "(None: any)")


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8265 + 1000
    tokens: list[ApiToken] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_wrong_tokens: int = Field(
        default=20, ge=1, description="wrong tokens one client address may present per "
        "minute (bearer, dashboard login, WebSocket hello); past it that source's wrong "
        "tokens are answered 429 after wrong_token_delay_s, while a valid token still passes")
    wrong_token_delay_s: float = Field(
        default=1.0, ge=0, le=10, description="how long a wrong token from a source past "
        "max_wrong_tokens waits for its 429")
    trusted_proxies: list[str] = Field(
        default_factory=list, description="addresses or networks (CIDR) of the reverse "
        "proxies in front of the server: only their X-Forwarded-For and Forwarded headers "
        "name the client; everyone else is known by the TCP peer address (uvicorn's "
        "forwarded_allow_ips is set from this too)")
    max_sign_ins_per_owner: int = Field(
        default=10, ge=1, description="dashboard sign-ins (POST /session) one owner may "
        "make per minute, per server process")
    max_sign_ins_per_source: int = Field(
        default=60, ge=1, description="dashboard sign-ins one client address may make per "
        "minute, per server process")
    max_sessions_per_owner: int = Field(
        default=20, ge=1, description="dashboard sessions one owner holds at once; a new "
        "one ends that owner's oldest")
    max_creates_per_s: float | None = Field(
        default=50.0, gt=0, le=1_000_000, description="POST /tasks and POST /tasks/batch "
        "calls one owner may make per second, per server process (a batch is one call); "
        "past it 429 TooManyRequests with Retry-After; None: no limit (0 is refused)")
    max_reads_per_s: float | None = Field(
        default=100.0, gt=0, le=1_000_000, description="GET /tasks and GET /tasks/{id} "
        "calls one owner may make per second, per server process; past it 429 "
        "TooManyRequests with Retry-After; None: no limit (0 is refused)")
    max_calls_in_flight_per_owner: int | None = Field(
        default=1, ge=1, le=1000, description="calls of the paced task routes (those of "
        "max_creates_per_s and max_reads_per_s) one owner has in progress at once, per server "
        "process; more wait their turn (256 at most, then 429): an owner that opens many "
        "connections loads the server as this many do, and another owner's call waits "
        "behind at most this many of its calls. None: no limit")
    rate_burst_s: float = Field(
        default=4.0, gt=0, le=3600, description="how many seconds' worth of calls an owner "
        "that was quiet may make at once (at least one) before max_creates_per_s and "
        "max_reads_per_s hold it")
    rate_limit_delay_s: float = Field(
        default=0.5, ge=0, le=10, description="how long a call refused by max_creates_per_s "
        "or max_reads_per_s waits for its 429: a client that waits for each answer then "
        "floods at most one call per connection per this long (at most 256 refusals wait "
        "at once, wrong tokens' included; past that they are answered at once); 0: at once")
    session_idle_s: float = Field(default=4 * 3600.0, gt=0, le=30 * 86400.0,
                                  description="a session unused this long ends")
    session_max_s: float = Field(default=12 * 3600.0, gt=0, le=30 * 86400.0,
                                 description="a session ends this long after sign-in")
    audit_retention_s: float | None = Field(
        default=90 * 86400.0, gt=0, description="audit entries older than this are pruned; "
        "None keeps them")

    @model_validator(mode="after")
    def _networks(self) -> ApiSettings:
        import ipaddress

        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"api.trusted_proxies: {entry!r} is not an IP address or "
                                 "network (CIDR)") from None
        return self


class QuotaSettings(BaseModel):
    """Limits on one owner's tasks; ``None`` is no limit.

    They apply to every task that carries an owner (every task created over HTTP).
    ``Settings.quotas["*"]`` is the default for every owner; an entry under an
    owner's name replaces it for that owner.
    """

    max_pending: int | None = Field(default=10_000, ge=0,
                                    description="PENDING tasks (queued or waiting) at once")
    max_queue_share: float = Field(
        default=0.5, gt=0, le=1, description="the most of max_queue_size one owner's PENDING "
        "tasks may take, so one owner's backlog never fills a queue against another's create")
    max_running: int | None = Field(default=None, ge=1, description="RUNNING tasks at once")
    max_cpu_s_per_day: float | None = Field(
        default=None, gt=0, description="CPU seconds an owner's attempts may use per UTC day; "
        "past it, none of its tasks starts before the next day")
    max_running_per_type: dict[str, int] = Field(
        default_factory=dict, description="RUNNING tasks of one type at once, by type")
    max_timeout_s: float | None = Field(default=24 * 3600.0, gt=0,
                                        description="ceiling on a task's timeout_s")
    max_retries: int | None = Field(default=10, ge=0,
                                    description="ceiling on a task's max_retries")
    max_parameters_bytes: int | None = Field(default=256 * 1024, ge=1,
                                             description="ceiling on the JSON parameters")
    max_work_units: int | None = Field(
        default=50_000_000, ge=1, description="ceiling on a task's work units (a built-in "
        "type counts grid points x bars, codes x years, trials x rows...)")
    max_preempted_per_day: int | None = Field(
        default=20, ge=0, description="how many times a UTC day the scheduler may preempt "
        "this owner's running tasks for others' deadlines")
    max_schedules: int | None = Field(default=100, ge=0, description="schedules at once")
    min_schedule_interval_s: float | None = Field(
        default=60.0, ge=0, description="shortest time a schedule may leave between runs")


#: Warm executors of the types whose callers wait for the answer, when
#: ``warm_workers_per_type`` is None: a prediction is interactive (an analyst waits on it),
#: the other built-in types run for minutes, where a worker's start does not count.
INTERACTIVE_WARM_WORKERS: dict[str, int] = {"prediction": 1}


def _default_quotas() -> dict[str, QuotaSettings]:
    return {"*": QuotaSettings()}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAYTASKS_", env_nested_delimiter="__", extra="forbid"
    )

    namespace: str = "raytasks"
    data_dir: Path = Path("~/.raytasks").expanduser()
    store_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/tasks.db"
    )
    artifact_root: Path | None = Field(default=None, description="default <data_dir>/artifacts")
    mlflow_tracking: bool = Field(default=True, description="completed prediction, backtest "
                                  "and training tasks log an MLflow run (raytasks.tracking)")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="where the runs go: a team's MLflow server (http://...); "
        "default sqlite:///<data_dir>/mlflow.db")
    cache_across_owners: bool = Field(
        default=False, description="whether the result cache serves one owner's task from "
        "another owner's finished task (off: each owner's cache is their own)")
    inline_result_max_bytes: int = Field(default=64 * 1024, ge=0)
    max_parameters_bytes: int = Field(default=1024 * 1024, ge=1)

    queues: list[str] = Field(default_factory=lambda: ["default"], min_length=1,
                              description="the named queues; a task naming another is refused")
    max_queue_size: int = Field(default=100_000, ge=1)
    quotas: dict[str, QuotaSettings] = Field(
        default_factory=_default_quotas,
        description="per-owner limits: '*' for every owner, or an owner's name")
    aging_interval_s: float = Field(
        default=30.0, gt=0, description="waiting this long raises a task one priority level"
    )
    lease_ttl_s: float = Field(default=10.0, gt=0)
    lease_batch_max: int = Field(default=128, ge=1, description="most tasks one lease call takes")
    store_busy_timeout_s: float = Field(
        default=0.0, ge=0, description="how long a store write waits for another writer; "
        "0: min(2 s, lease_ttl_s / 4), well under the lease TTL so one stall cannot expire "
        "healthy leases")
    heartbeat_interval_s: float = Field(
        default=1.0, gt=0, description="how often an executor renews its leases; at most "
        "half of lease_ttl_s, so a live executor's lease never runs out between beats")
    direct_intake: bool = Field(
        default=True, description="a client that can open the store commits its plain "
        "submits itself (durable before the answer, no call to the manager on the way); "
        "the manager adopts them")
    executor_loan_s: float = Field(
        default=1.0, ge=0, description="how long an idle executor the manager lends to a "
        "client runs that client's lone tasks, sent straight to it (a direct-intake client "
        "only); 0: lone tasks go through the queues")
    intake_credits: int = Field(default=5000, ge=1, description="most tasks a client may "
                                "commit itself into one queue per grant")
    intake_grant_ttl_s: float = Field(default=10.0, gt=0, description="how long a grant of "
                                      "queue room to a direct-intake client holds")

    default_timeout_s: float | None = Field(default=3600.0, gt=0)
    default_max_retries: int = Field(default=3, ge=0)
    retry_backoff_base_s: float = Field(default=1.0, ge=0)
    retry_backoff_max_s: float = Field(default=300.0, ge=0)
    retry_jitter: float = Field(default=0.5, ge=0, le=1)
    cancel_grace_s: float = Field(default=5.0, ge=0)
    memory_guard_margin_mb: float | None = Field(
        default=512.0, ge=0, description="an executor ends its attempt (out_of_memory) when "
        "the node's memory comes this close to where Ray's memory monitor kills workers "
        "and the attempt alone grew by more than the node is over (raytasks.memory); "
        "None: off, Ray's monitor alone acts")
    preemption: bool = Field(default=True, description="preempt running tasks of lower "
                             "priority when a task's deadline cannot be met otherwise")
    preempt_grace_s: float = Field(default=30.0, ge=0, description="how long a preempted "
                                   "attempt has to checkpoint and stop (per type: "
                                   "task_types.<name>.preempt_grace_s)")
    max_preemptions_per_task: int = Field(
        default=3, ge=0, description="a task preempted this often is not preempted again")

    workers_per_type: int | None = Field(
        default=None, ge=0, description="a fixed pool size for every type; None: pools "
        "scale between min_workers_per_type and max_workers_per_type")
    min_workers_per_type: int = Field(default=0, ge=0, description="0 (with "
                                      "warm_workers_per_type=0): an idle raytasks holds no "
                                      "executor processes")
    max_workers_per_type: int = Field(default=2, ge=0)
    idle_timeout_s: float = Field(default=60.0, gt=0,
                                  description="an idle executor above the minimum is "
                                  "retired after this long")
    warm_workers_per_type: int | None = Field(
        default=None, ge=0, description="idle executors every pool keeps ready above its "
        "busy ones (never above its max_workers), so a burst starts at once; None: one "
        "for prediction (an interactive prediction then starts within a second, not after "
        "a worker process's start of seconds), none for the other types; 0: an idle "
        "raytasks holds no executor processes (a cluster that pays for idle nodes)")
    autoscale_interval_s: float = Field(default=0.5, gt=0,
                                        description="how often the engine reads queue depths")
    ray_dashboard: bool = Field(default=True, description="embedded Ray: run Ray's own "
                                "dashboard and Jobs API (127.0.0.1:8265)")
    system_actors_on_head: bool = Field(
        default=True, description="keep the manager, tracker, notifier and engine on the head")
    executor_num_cpus: float = Field(default=0.0, ge=0)
    task_types: dict[str, TaskTypeSettings] = Field(default_factory=dict)

    progress_flush_interval_s: float = Field(default=0.5, gt=0)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    event_buffer_size: int = Field(default=10_000, ge=100)
    event_retention_s: float | None = Field(
        default=7 * 86400.0, gt=0, description="events older than this are pruned once every "
        "delivery cursor has passed them; None keeps them")
    archive_dir: Path | None = Field(
        default=None, description="finished tasks pruned by task_retention_s are first "
        "written here as Parquet files; None deletes them outright")
    task_log_max_bytes: int = Field(
        default=256 * 1024, ge=1024, description="what one attempt's log keeps; past it, "
        "one 'truncated' line")
    task_retention_s: float | None = Field(
        default=None, gt=0, description="finished tasks older than this are pruned with "
        "their artifacts; None keeps them")

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.data_dir = Path(self.data_dir).expanduser()
        if self.artifact_root is None:
            self.artifact_root = self.data_dir / "artifacts"
        if self.store_url is None:
            self.store_url = f"sqlite:///{self.data_dir / 'tasks.db'}"
        if not self.store_busy_timeout_s:
            self.store_busy_timeout_s = min(2.0, self.lease_ttl_s / 4)
        if self.heartbeat_interval_s > self.lease_ttl_s / 2:
            raise ValueError(
                f"heartbeat_interval_s={self.heartbeat_interval_s:g} must be at most half of "
                f"lease_ttl_s={self.lease_ttl_s:g}: a live executor's lease would run out "
                "between its heartbeats")
        self.resources = self.resources.with_defaults(self.data_dir)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))

    def quota_for(self, owner: str | None) -> QuotaSettings | None:
        """The limits of ``owner``'s tasks; None for tasks without an owner (trusted clients)."""
        if owner is None:
            return None
        return self.quotas.get(owner) or self.quotas.get("*")

    def for_type(self, task_type: str) -> TaskTypeSettings:
        """The settings of one task type, defaults filled in."""
        own = self.task_types.get(task_type, TaskTypeSettings())
        workers = self.workers_per_type if own.workers is None else own.workers
        low = own.min_workers if own.min_workers is not None else self.min_workers_per_type
        high = own.max_workers if own.max_workers is not None else self.max_workers_per_type
        if workers is not None and own.min_workers is None and own.max_workers is None:
            low = high = workers
        warm = own.warm_workers if own.warm_workers is not None else \
            self.warm_workers_per_type if self.warm_workers_per_type is not None else \
            INTERACTIVE_WARM_WORKERS.get(task_type, 0)
        return TaskTypeSettings(
            workers=workers,
            min_workers=low,
            max_workers=max(low, high),
            idle_timeout_s=own.idle_timeout_s or self.idle_timeout_s,
            warm_workers=min(warm, max(low, high)),
            num_cpus=self.executor_num_cpus if own.num_cpus is None else own.num_cpus,
            resources=own.resources,
            timeout_s=own.timeout_s,
            max_retries=own.max_retries,
            max_concurrency=own.max_concurrency,
            preemptible=own.preemptible,
            preempt_grace_s=self.preempt_grace_s if own.preempt_grace_s is None
            else own.preempt_grace_s,
            max_memory_mb=own.max_memory_mb,
            retry_oom=own.retry_oom,
        )


class _TomlSource(PydanticBaseSettingsSource):
    """Reads ``RAYTASKS_CONFIG`` (or ``./raytasks.toml``), table ``[raytasks]`` or top level."""

    def __call__(self) -> dict[str, Any]:
        path = Path(os.environ.get("RAYTASKS_CONFIG", "raytasks.toml"))
        if not path.is_file():
            return {}
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
        table = doc.get("raytasks", doc)
        return dict(table)

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False
