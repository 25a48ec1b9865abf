"""Configuration: constants, names, limits, times, and the Config a server is built from."""

import dataclasses
import datetime
import os
import re
import signal
import time


__version__ = "0.1.0"


DEFAULT_DATA_DIR = "agentgit-data"
DOCS_URL = "https://docs.github.com/rest"
API_VERSION = "2022-11-28"
GHES_VERSION = "3.19.0"          # the GitHub Enterprise Server agentgit presents itself as (/meta, a header)
API_RATE_LIMIT = 5000            # the hourly figure reported (GitHub's for a signed-in user): the API itself is
                                 # not rate-limited (only agent registration and sign-in are)


def rate_limit_reset():
    """When the reported (always full) rate-limit window renews: the next hour, in epoch seconds."""
    return int(time.time()) // 3600 * 3600 + 3600
MAX_JSON_BODY = 10 * 1024 * 1024          # REST bodies; larger ones are refused with 413
MAX_TEXT = 65536                          # GitHub's limit on issue, pull request and comment bodies
MAX_PACK_BODY = 2 * 1024 * 1024 * 1024    # one push; the pack is streamed, never held in memory
MAX_ASSET_BYTES = 100 * 1024 * 1024       # one release asset, held in the database (GitHub allows 2 GB)
REQUEST_IDLE_TIMEOUT = 120                # seconds a client may stay silent before its thread gives up
HEADER_DEADLINE = 20                      # seconds to send a request's line and headers (or to idle between)
IDLE_CONNECTIONS_PER_CLIENT = 32          # connections one address may keep waiting for a request; more are closed
MAX_CONNECTIONS = 1024                    # connections at once; past it the server accepts when one ends
PER_PAGE_DEFAULT, PER_PAGE_MAX = 30, 100
OTHER_PROCESS_POLL = 0.05                 # seconds: how soon a CLI change (e.g. a revocation) takes effect

# GitHub's own rules: logins are alphanumeric with single inner hyphens, at most 39 characters;
# repository names are letters, digits, '.', '-', '_' and at most 100 characters.
LOGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
REPO_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
AGENT_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
TEAM_NAME_MAX = 255
# the task a run's job grant names (runner.mint_job_token), by which what a job token did is known: it
# starts no run (GitHub's loop rule) and approves no pull request unless its repository allows it
JOB_TASK_PREFIX = "task:run/"
INSTALLATION_TASK_PREFIX = "task:installation/"    # an App installation's grant: task:installation/<id>


def crash_point(name):
    """Where the crash tests kill the server: with AGENTGIT_CRASH_AT=name in its environment the process
    sends itself SIGKILL here, the kill -9 an operator or the kernel's OOM killer may deliver at any
    moment. Named at the windows between a side effect and its record (tests/test_crash.py)."""
    if os.environ.get("AGENTGIT_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def now():
    """The current UTC time as GitHub writes it: 2026-01-31T12:00:00Z."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    """ISO 8601 (with Z or an offset) to an aware datetime; ValueError when it is not one."""
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("a time zone is required")
    return value.astimezone(datetime.timezone.utc)


def visible_ascii(text):
    """Is ``text`` all visible ASCII (no space, tab, CR, LF or other control)? A URL that goes into a
    header or a redirect must be: urlsplit() drops tabs and newlines, so a check on its parts alone
    would pass what a header writer or a browser then reads otherwise."""
    return isinstance(text, str) and all("!" <= c <= "~" for c in text)


def valid_repo_name(name):
    """A repository name that is safe as a path segment and as GitHub would take it."""
    return (isinstance(name, str) and bool(REPO_NAME_RE.match(name)) and name not in (".", "..")
            and not name.lower().endswith(".git"))


@dataclasses.dataclass
class Config:
    data_dir: str
    # a postgresql:// URL (storage.PostgresStore); empty: the SQLite file in data_dir
    database: str = dataclasses.field(default_factory=lambda: os.environ.get("AGENTGIT_DATABASE", ""))
    url: str = ""                          # public base URL; filled in from the bound address if empty
    registration: str = "open"             # "open" or "closed": anonymous agent registration
    git_engine: str = "auto"               # "auto", "git" or "dulwich"
    registration_limit: int = 20           # registrations per client address per window
    registration_window: int = 600         # seconds
    agent_credentials: str = None          # "bootstrap" or "direct"; None: as the installation last chose
    agent_standing_access: str = None      # "read" or "write": an agent's access outside a task to what is not its own
    allow_loopback_client_documents: bool = False   # OAuth client metadata documents from 127.0.0.1 (tests)
    broker_allow_loopback: bool = False    # broker upstreams on loopback addresses (tests' upstreams)
    egress_allow_loopback: bool = False    # every outbound connection (webhooks, the broker, client documents)
                                           # may go to loopback addresses (tests)
    webhook_retries: int = 0               # a failed delivery is tried again up to this many times (backing off)
    workflow_runner: str = None            # act's path: queued runs execute (serve --run-workflows); None: records
    broker_connect_to: dict = dataclasses.field(default_factory=dict)   # {"host:port": ("address", port)}, as curl's
    dpop_nonce: bool = False               # DPoP proofs must carry this server's nonce (RFC 9449 §8)
    require_sender_constrained: bool = False   # task and tool tokens only bound to a certificate or DPoP key
    require_runtime_certificates: bool = False  # every agent mints with a client certificate, not only those that did
    header_deadline: float = HEADER_DEADLINE                  # the listeners' guards (server.Guarded)
    idle_connections_per_client: int = IDLE_CONNECTIONS_PER_CLIENT
    max_connections: int = MAX_CONNECTIONS
    reuse_port: bool = False               # other processes may listen on the same port (serve --workers)


AGENT_CREDENTIALS = ("bootstrap", "direct")
AGENT_STANDING_ACCESS = ("read", "write")


def from_now(seconds):
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
