"""One settings module for every environment; production differs only by environment values.

The embedded default (no variables set) runs on SQLite with Celery's filesystem broker, so
`make run` needs no servers. `DATABASE_URL`, `CELERY_BROKER_URL` and `REDIS_URL` switch the same
code to PostgreSQL and Redis.
"""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from pythonjsonlogger.core import RESERVED_ATTRS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("FINOPS_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "insecure-debug-only-key"  # noqa: S105 - only ever used with DEBUG on

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "tenants",
    "finops",
    "budgets",
]

MIDDLEWARE = [
    # One log line per request (413s included); then an oversized body answers 413 (JSON on /api/) before
    # anything reads it; then probes and Prometheus, answered before host validation and sessions.
    "finops.middleware.RequestLogMiddleware",
    "tenants.middleware.BodySizeLimitMiddleware",
    "finops.middleware.OperationsEndpointsMiddleware",
    # No NUL in URLs (strict JSON bodies are finops.parsers.OrjsonParser's part).
    "finops.middleware.HostileInputMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "finops.urls"
WSGI_APPLICATION = "finops.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'finops.sqlite3'}")}
# Persistent connections: without them a single-record insert falls from ~280/s to ~90/s (DESIGN.md 12).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL: the API-key lookup and preflight's reservation run as prepared statements (tenants/db.py).
# Off for PgBouncer in transaction mode before 1.21 (or without max_prepared_statements).
DB_PREPARED_STATEMENTS = env.bool("DB_PREPARED_STATEMENTS", default=True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while the worker writes; the timeout waits out short write locks.
    # IMMEDIATE: a transaction takes the write lock when it begins, so it waits (up to the timeout) for
    # another process's write instead of failing at once with "database is locked" when it reads first
    # and then writes (SQLite does not apply the busy timeout to that upgrade). Seen with `seed_demo`'s
    # window reconciliation while `make run`'s worker was writing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A cache that stops answering fails fast instead of hanging requests (and /readyz).
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "finops"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="tokenspend@localhost")
# Where people reach this app: links in notifications (approval requests) start with it.
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serving from the finders means `collectstatic` is not a prerequisite for `make run` or tests;
# the production image runs collectstatic and sets WHITENOISE_USE_FINDERS=false.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)

# --- API -------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # JSON bodies parse once, strictly, with orjson (depth, lone surrogates, NaN/Infinity answer 400).
    "DEFAULT_PARSER_CLASSES": [
        "finops.parsers.OrjsonParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "tenants.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_KEY_RATE", default="6000/min")},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Token spend control plane API",
    "DESCRIPTION": (
        "Ingest LLM usage, price it exactly, read spend by tenant, workflow, model and environment, and govern "
        "spend before it happens: budgets, preflight decisions with reservations, controls and approvals."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "tenants.schema.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "EnvironmentEnum": "finops.models.Environment",
        "PromptVersionStatusEnum": "finops.models.PromptVersion.Status",
        "ChannelEnum": "finops.models.Channel",
        "ServiceTierEnum": "finops.models.ServiceTier",
        # Requests also take OpenAI's own spelling of the standard tier.
        "ServiceTierRequestEnum": ["standard", "default", "batch", "flex", "priority"],
    },
}

# --- Ingest limits -----------------------------------------------------------------------------------
USAGE_MAX_RECORDS_PER_REQUEST = env.int("USAGE_MAX_RECORDS_PER_REQUEST", default=1000)
USAGE_MAX_BODY_BYTES = env.int("USAGE_MAX_BODY_BYTES", default=8 * 1024 * 1024)
USAGE_BACKFILL_DAYS = env.int("USAGE_BACKFILL_DAYS", default=35)
USAGE_MAX_FUTURE_SECONDS = env.int("USAGE_MAX_FUTURE_SECONDS", default=300)
USAGE_MAX_TOKENS_PER_BUCKET = 10**9
USAGE_MAX_TAGS = 20
DATA_UPLOAD_MAX_MEMORY_SIZE = USAGE_MAX_BODY_BYTES + 1024
ROLLUP_HOURLY_RETENTION_DAYS = env.int("ROLLUP_HOURLY_RETENTION_DAYS", default=14)
# PostgreSQL: the usage table's monthly partitions (docs/operations.md, "Usage partitions and retention").
# Months created ahead by the daily maintenance task; a month without one lands in the default partition.
USAGE_PARTITIONS_AHEAD = env.int("USAGE_PARTITIONS_AHEAD", default=3)
# Raw usage months older than this are detached and dropped once their rollups are complete; 0 keeps all.
USAGE_RAW_RETENTION_MONTHS = env.int("USAGE_RAW_RETENTION_MONTHS", default=0)
# Budgets and preflight (docs/budgets.md).
BUDGET_TIME_ZONE = env.str("BUDGET_TIME_ZONE", default="UTC")  # default for new budgets
PREFLIGHT_DEFAULT_MAX_OUTPUT_TOKENS = env.int("PREFLIGHT_DEFAULT_MAX_OUTPUT_TOKENS", default=16384)
# Commit reservations without waiting for the WAL flush: hot budget rows stay locked ~1 fsync less.
# A crash can forget the last moments' reservations (their calls then count only when usage arrives).
PREFLIGHT_ASYNC_COMMIT = env.bool("PREFLIGHT_ASYNC_COMMIT", default=True)
# How often a process re-checks whether catalog, budgets, controls or workflows changed (one query).
# Its own changes are seen at once; other processes' within this many seconds. 0 = on every decision.
PREFLIGHT_STATE_TTL_SECONDS = env.float("PREFLIGHT_STATE_TTL_SECONDS", default=1.0)
RESERVATION_TTL_SECONDS = env.int("RESERVATION_TTL_SECONDS", default=600)
APPROVAL_TTL_SECONDS = env.int("APPROVAL_TTL_SECONDS", default=24 * 3600)
# A workflow is high-cost for prompt-change reviews when its priority is high or critical, or when its
# last 30 days are more than this share of the tenant's spend over the same 30 days (docs/budgets.md).
PROMPT_REVIEW_SPEND_SHARE = env.float("PROMPT_REVIEW_SPEND_SHARE", default=0.10)
CONTROL_HYSTERESIS_PERCENT = env.int("CONTROL_HYSTERESIS_PERCENT", default=5)
CONTROL_MIN_SECONDS = env.int("CONTROL_MIN_SECONDS", default=900)
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=5.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)
API_KEY_LAST_USED_RESOLUTION_SECONDS = env.int("API_KEY_LAST_USED_RESOLUTION_SECONDS", default=60)
# `manage.py serve` refuses a non-loopback HOST in demo mode (debug on, or the published demo logins and
# keys in the database) unless this is true; then it says loudly what it exposes (docs/operations.md).
DEMO_ALLOW_NETWORK = env.bool("DEMO_ALLOW_NETWORK", default=False)
# The live demo (finops/services/seed/demo_live.py): in demo mode `manage.py serve` also runs
# `manage.py demo_traffic`, which sends usage through the ingest API with a scripted incident now and then.
DEMO_TRAFFIC = env.bool("DEMO_TRAFFIC", default=True)
DEMO_TRAFFIC_INTERVAL_SECONDS = env.float("DEMO_TRAFFIC_INTERVAL_SECONDS", default=5.0)
DEMO_TRAFFIC_SPEED = env.float("DEMO_TRAFFIC_SPEED", default=1.0)  # 1: the demo tenants' real daily rhythm
DEMO_INCIDENT_EVERY_SECONDS = env.float("DEMO_INCIDENT_EVERY_SECONDS", default=600.0)

# --- Usage from OpenTelemetry and LiteLLM (docs/api.md) -------------------------------------------------
# Where an OTLP span's workflow comes from: the first attribute present (span, then resource), made a slug.
OTLP_WORKFLOW_ATTRIBUTES = env.list(
    "OTLP_WORKFLOW_ATTRIBUTES",
    default=["tokenspend.workflow", "gen_ai.agent.name", "gen_ai.operation.name", "service.name"],
)
# Attributes copied onto the usage record as tags (at most USAGE_MAX_TAGS), when present.
OTLP_TAG_ATTRIBUTES = env.list("OTLP_TAG_ATTRIBUTES", default=["gen_ai.provider.name", "service.name"])
OTLP_TENANT_ATTRIBUTE = env.str("OTLP_TENANT_ATTRIBUTE", default="tokenspend.tenant")  # platform keys
OTLP_RESERVATION_ATTRIBUTE = env.str("OTLP_RESERVATION_ATTRIBUTE", default="tokenspend.reservation_id")
# LiteLLM StandardLoggingPayload: where the workflow and environment are read from (dotted paths).
LITELLM_WORKFLOW_FIELDS = env.list(
    "LITELLM_WORKFLOW_FIELDS",
    default=[
        "metadata.spend_logs_metadata.workflow",
        "metadata.requester_metadata.workflow",
        "metadata.user_api_key_alias",
    ],
)
LITELLM_TENANT_FIELD = env.str("LITELLM_TENANT_FIELD", default="metadata.user_api_key_team_alias")  # platform keys

# --- Operations: health, metrics, logs (docs/operations.md) ---------------------------------------------
READINESS_TIMEOUT_SECONDS = env.float("READINESS_TIMEOUT_SECONDS", default=1.0)
# /metrics: "off", "token" (Authorization: Bearer METRICS_TOKEN) or "network" (METRICS_ALLOWED_NETWORKS).
METRICS_ACCESS = env.str("METRICS_ACCESS", default="off")
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"])
if METRICS_ACCESS not in ("off", "token", "network"):
    raise ImproperlyConfigured("METRICS_ACCESS must be off, token or network.")
if METRICS_ACCESS == "token" and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_ACCESS=token needs a METRICS_TOKEN of at least 16 characters.")
# "text" (readable, the default) or "json" (one JSON object per line: for log shippers).
LOG_FORMAT = env.str("LOG_FORMAT", default="text")

# --- Celery --------------------------------------------------------------------------------------------
# The filesystem transport needs no server: it is the embedded default. Production sets a redis:// URL.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir, _control_dir = VAR_DIR / "celery" / "queue", VAR_DIR / "celery" / "control"
    for _folder in (_queue_dir, _control_dir):
        _folder.mkdir(parents=True, exist_ok=True)  # kombu does not create them
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "control_folder": str(_control_dir),
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A task taken by a worker that then died whole (kill -9, a lost machine) is acknowledged by nobody:
    # Redis hands it out again once it has been unacknowledged this long (Celery's default, an hour).
    # Every task is safe to run twice, so a shorter timeout only costs a duplicate run of a task that
    # outlives it; it must stay longer than the longest task and countdown.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
# Acknowledged when done, not when taken: a worker that dies mid-task leaves it to be delivered again.
CELERY_TASK_ACKS_LATE = True
# ... including when only the pool process running it dies (the OOM killer, kill -9): without this
# Celery acknowledges such a task as failed (WorkerLostError) and it is never run again.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # LOG_FORMAT=json: one JSON object per line, with the request id on every record of a request.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            # django.request attaches the request object; its repr carries the query string: left out.
            "reserved_attrs": [*RESERVED_ATTRS, "request"],
        },
    },
    "filters": {"request_context": {"()": "finops.request_context.RequestContextFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["request_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
if LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be text or json.")

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    X_FRAME_OPTIONS = "DENY"

# --- Hostile input and faults (issue 13, docs/operations.md) --------------------------------------------
# A database that accepts connections but never answers must not hold a request until gunicorn kills the
# worker: connecting gives up after DB_CONNECT_TIMEOUT_SECONDS, an established connection whose peer stops
# acknowledging is dropped after DB_TCP_USER_TIMEOUT_MS, and a statement is cancelled by the server after
# DB_STATEMENT_TIMEOUT_MS (0 = no limit; the web process sets 10 s in finops/wsgi.py, workers keep none
# because a rollup rebuild may run longer). The API answers each of these 503 with Retry-After.
DB_CONNECT_TIMEOUT_SECONDS = env.int("DB_CONNECT_TIMEOUT_SECONDS", default=3)
DB_TCP_USER_TIMEOUT_MS = env.int("DB_TCP_USER_TIMEOUT_MS", default=10_000)
DB_STATEMENT_TIMEOUT_MS = env.int("DB_STATEMENT_TIMEOUT_MS", default=0)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _pg_options = DATABASES["default"].setdefault("OPTIONS", {})
    _pg_options.setdefault("connect_timeout", DB_CONNECT_TIMEOUT_SECONDS)
    _pg_options.setdefault("keepalives", 1)
    _pg_options.setdefault("keepalives_idle", 10)
    _pg_options.setdefault("keepalives_interval", 5)
    _pg_options.setdefault("keepalives_count", 3)
    _pg_options.setdefault("tcp_user_timeout", DB_TCP_USER_TIMEOUT_MS)
    if DB_PREPARED_STATEMENTS:
        # psycopg prepares nothing while this is None (Django's default). Django's cursors bind on the
        # client, which never prepares: only tenants.db.prepared_cursor()'s statements are prepared.
        _pg_options.setdefault("prepare_threshold", 1_000_000)
    if DB_STATEMENT_TIMEOUT_MS:
        _timeout_option = f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"
        _pg_options["options"] = f"{_pg_options.get('options', '')} {_timeout_option}".strip()

# Webhook targets: a channel may not point at loopback, link-local, private, or metadata addresses (checked
# when it is registered and again at each delivery, since DNS can change), unless its host is named here.
WEBHOOK_ALLOWED_INTERNAL_HOSTS = env.list("WEBHOOK_ALLOWED_INTERNAL_HOSTS", default=[])

# Behind TLS (DJANGO_DEBUG=false): cookies only over https, HSTS, and the proxy's scheme header trusted when
# the operator names it, e.g. DJANGO_SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO,https.
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=True)
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # Preloading is a commitment browsers keep for months: the operator opts in, the check does not nag.
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    # Off by default: the app behind a TLS proxy redirects nothing itself (probes call plain http).
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    _proxy_ssl_header = env.list("DJANGO_SECURE_PROXY_SSL_HEADER", default=[])
    if _proxy_ssl_header:
        if len(_proxy_ssl_header) != 2:
            raise ImproperlyConfigured(
                "DJANGO_SECURE_PROXY_SSL_HEADER must be HEADER,value, e.g. HTTP_X_FORWARDED_PROTO,https."
            )
        SECURE_PROXY_SSL_HEADER = (_proxy_ssl_header[0], _proxy_ssl_header[1])
