"""REST: a repository's webhooks and their deliveries, and the worker that sends them. GitHub's API for
hooks (create, list, get, update, config, ping, test, deliveries, redelivery) over the outbox's rows.

Deliveries follow GitHub's contract: a POST with X-GitHub-Event, X-GitHub-Delivery, X-GitHub-Hook-ID, the
installation target headers, X-Hub-Signature-256 (and the SHA-1 one) over the body with the hook's secret,
``User-Agent: GitHub-Hookshot/agentgit``, the payload in GitHub's shape with an additive ``agentgit`` object
naming who acted for whom (actor, kind, delegator, task, grant, audit row). They leave through the egress
path (public addresses only, the checked address pinned, no redirects); ``serve --egress-allow-loopback``
allows loopback targets for tests. Each attempt is recorded with what the receiver answered; a failed one
is redelivered by asking. The secret is sealed at rest and never shown.
"""

import hashlib
import hmac
import json
import time
import urllib.parse

from agentgit.config import now
from agentgit.storage import insert
from agentgit.background import Worker
from agentgit.crypto import seal, unseal
from agentgit.errors import HTTPError, invalid
from agentgit.egress import outbound_connection, public_address, within_deadline
from agentgit.gitstore import ZERO_SHA, commits_between, open_repo
from agentgit.accounts import account_by_id, account_by_login, full_name, repo_by_id
from agentgit.policy import Resource, decide
from agentgit.outbox import queue_delivery
from agentgit.authentication import Principal
from agentgit.routing import route
from agentgit.serializers import commit_json, node_id, repo_json, user_json
from agentgit.lookups import delete_row, find_repo, one_or_404
from agentgit.orgs import find_org
from agentgit.issues import comment_json, issue_json
from agentgit.pulls import pull_json, pull_rows
from agentgit.reviews import review_json
from agentgit.protection import check_run_json
from agentgit.releases import release_json
from agentgit.actions import job_json, run_json, workflow_json

HOOK_EVENTS = ("*", "push", "create", "delete", "issues", "issue_comment", "pull_request", "pull_request_review",
               "release", "check_run", "workflow_run", "workflow_job", "repository_dispatch", "ping")
CONTENT_TYPES = ("json", "form")
MAX_HOOKS = 20                  # GitHub's limit a repository
DELIVERY_TIMEOUT = 10           # seconds for the whole exchange, as GitHub's
LEASE_SECONDS = 60              # a delivery a worker claimed and did not finish is claimed again after this
MAX_RESPONSE_KEPT = 4096        # bytes of the receiver's answer kept with the delivery
MAX_PUSH_COMMITS = 20           # a push payload lists its newest 20 commits, as GitHub's
SECRET_PURPOSE = b"webhook secret"
RETRY_AFTER = 10                # seconds before a failed delivery's first retry; each next waits four times longer


def sealed_secret(app, hook_id, secret):
    return seal(app.key, SECRET_PURPOSE, secret.encode(), b"hook %d" % hook_id) if secret else None


def hook_secret(app, hook):
    return unseal(app.key, SECRET_PURPOSE, hook["secret_sealed"], b"hook %d" % hook["id"]) if hook["secret_sealed"] \
        else None


def hook_json(app, hook):
    """GitHub's hook: a repository's (type Repository), an organization's (type Organization) or an App's."""
    if hook["repo_id"] is not None:
        kind, api = "Repository", "%s/repos/%s/hooks/%d" % (app.api, full_name(repo_by_id(app.store, hook["repo_id"])),
                                                            hook["id"])
    elif hook["app_id"] is not None:
        kind, api = "App", "%s/app/hook" % app.api
    else:
        kind, api = "Organization", "%s/orgs/%s/hooks/%d" % (app.api, account_by_id(app.store, hook["org_id"])["login"],
                                                             hook["id"])
    last = app.store.one("SELECT status_code, status FROM hook_deliveries WHERE hook_id = ? AND state IN"
                         " ('delivered', 'failed') ORDER BY id DESC LIMIT 1", hook["id"])
    config = {"content_type": hook["content_type"], "insecure_ssl": hook["insecure_ssl"], "url": hook["url"]}
    if hook["secret_sealed"]:
        config["secret"] = "********"
    out = {"type": kind, "id": hook["id"], "name": "web", "active": bool(hook["active"]),
           "events": json.loads(hook["events"]), "config": config, "updated_at": hook["updated_at"],
           "created_at": hook["created_at"], "url": api, "ping_url": api + "/pings", "deliveries_url": api +
           "/deliveries", "last_response": {"code": last["status_code"] if last else None,
                                             "status": last["status"] if last else "unused", "message": None}}
    if kind == "Repository":
        out["test_url"] = api + "/test"
    return out


def checked_config(req, config, creating):
    """The url, content type, secret and insecure_ssl of a hook's config: an http(s) URL whose host
    resolves to public addresses only (checked again at every delivery: a name may move)."""
    if not isinstance(config, dict):
        raise invalid("Hook", "config", message="config must be an object")
    fields = {}
    if creating or "url" in config:
        url = req.text_field(config, "url", "Hook", required=True, limit=2048)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid("Hook", "url", message="url must be an http or https URL")
        public_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allows_loopback(
            req.app), what="the hook's host", status=422)
        fields["url"] = url
    if "content_type" in config:
        if config["content_type"] not in CONTENT_TYPES:
            raise invalid("Hook", "content_type", message="content_type must be json or form")
        fields["content_type"] = config["content_type"]
    if "insecure_ssl" in config:
        fields["insecure_ssl"] = "1" if str(config["insecure_ssl"]) == "1" else "0"
    if "secret" in config:
        secret = req.text_field(config, "secret", "Hook", limit=1024)
        fields["secret"] = secret or None
    return fields


def allows_loopback(app):
    return app.config.egress_allow_loopback


def checked_events(req, body):
    events = req.field(body, "events", list, "Hook")
    if events is not None and (not events or not all(e in HOOK_EVENTS for e in events)):
        raise invalid("Hook", "events", message="events must name some of %s" % ", ".join(HOOK_EVENTS))
    return events


def hooks_of(req, owner, repo, org, url=None):
    """(the repository's or organization's row, the hooks' column naming it), once managing its hooks is
    allowed: manage_hooks on a repository (for a task token, with the hook's ``url`` in its grant's
    network_allowlist), manage_org_hooks on an organization."""
    if org is not None:
        return find_org(req, org, "manage_org_hooks"), "org_id"
    return find_repo(req, owner, repo, "manage_hooks", **({"upstream": url} if url else {})), "repo_id"


def find_hook(req, owner, repo, org, hook_id, url=None):
    row, column = hooks_of(req, owner, repo, org, url)
    return row, one_or_404(req, "SELECT * FROM hooks WHERE id = ? AND %s = ?" % column, int(hook_id), row["id"])


def write_hook(req, db, hook_id, fields):
    secret = fields.pop("secret", False)
    if secret is not False:
        fields["secret_sealed"] = sealed_secret(req.app, hook_id, secret)
    for name, value in fields.items():      # the names are this module's own, never the request's
        db.execute("UPDATE hooks SET %s = ?, updated_at = ? WHERE id = ?" % name, (value, now(), hook_id))


REPO_HOOKS, ORG_HOOKS = "/api/v3/repos/{owner}/{repo}/hooks", "/api/v3/orgs/{org}/hooks"


@route("POST", REPO_HOOKS)
@route("POST", ORG_HOOKS)
def create_hook(req, owner=None, repo=None, org=None):
    """A hook, then its ping (as GitHub sends one)."""
    body = req.json()
    if body.get("name", "web") != "web":
        raise invalid("Hook", "name", message="name must be web")
    fields = checked_config(req, body.get("config"), creating=True)
    fields["events"] = json.dumps(checked_events(req, body) or ["push"])
    fields["active"] = int(req.field(body, "active", bool, "Hook", default=True))
    row, column = hooks_of(req, owner, repo, org, fields["url"])
    with req.transaction() as db:
        if db.execute("SELECT COUNT(*) FROM hooks WHERE %s = ?" % column, (row["id"],)).fetchone()[0] >= MAX_HOOKS:
            raise invalid("Hook", "base", "custom", "at most %d hooks each" % MAX_HOOKS)
        stamp = now()
        hook_id = insert(db, "INSERT INTO hooks (%s, url, creator_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
                             % column, (row["id"], fields["url"], req.principal.user["id"], stamp, stamp))
        write_hook(req, db, hook_id, fields)
        queue_ping(req, db, hook_id)
        req.effect("created hook %d to %s" % (hook_id, urllib.parse.urlsplit(fields["url"]).hostname))
    req.app.deliveries_waiting.set()
    return 201, hook_json(req.app, req.app.store.one("SELECT * FROM hooks WHERE id = ?", hook_id))


def queue_ping(req, db, hook_id):
    """A ping: the hook, and the repository or organization it belongs to."""
    hook = db.execute("SELECT * FROM hooks WHERE id = ?", (hook_id,)).fetchone()
    payload = {"zen": "Agents act for people; the record says for whom.", "hook_id": hook_id,
               "hook": hook_json(req.app, hook), "sender": user_json(req.app, req.principal.user)}
    if hook["repo_id"] is not None:
        payload["repository"] = repo_json(req.app, repo_by_id(req.app.store, hook["repo_id"]))
    else:
        payload["organization"] = user_json(req.app, account_by_id(req.app.store, hook["org_id"]))
    queue_delivery(db, hook_id, "ping", None, hook["repo_id"], {}, chain_of_request(req), json.dumps(payload))


def chain_of_request(req):
    return dict(req.chain_fields(), audit_id=req.audit_id)


@route("GET", REPO_HOOKS)
@route("GET", ORG_HOOKS)
def list_hooks(req, owner=None, repo=None, org=None):
    row, column = hooks_of(req, owner, repo, org)
    return [hook_json(req.app, h) for h in req.paginate(req.app.store.all(
        "SELECT * FROM hooks WHERE %s = ? ORDER BY id" % column, row["id"]))]


@route("GET", REPO_HOOKS + "/{hook_id:int}")
@route("GET", ORG_HOOKS + "/{hook_id:int}")
def get_hook(req, hook_id, owner=None, repo=None, org=None):
    return hook_json(req.app, find_hook(req, owner, repo, org, hook_id)[1])


@route("PATCH", REPO_HOOKS + "/{hook_id:int}")
@route("PATCH", ORG_HOOKS + "/{hook_id:int}")
def update_hook(req, hook_id, owner=None, repo=None, org=None):
    body = req.json()
    fields = checked_config(req, body["config"], creating=False) if "config" in body else {}
    events = checked_events(req, body)
    adding, removing = (req.field(body, key, list, "Hook", default=[]) for key in ("add_events", "remove_events"))
    active = req.field(body, "active", bool, "Hook")
    _, hook = find_hook(req, owner, repo, org, hook_id, fields.get("url"))
    events = set(events if events is not None else json.loads(hook["events"])) | set(adding)
    events -= set(removing)
    if not events or not events <= set(HOOK_EVENTS):
        raise invalid("Hook", "events", message="events must name some of %s" % ", ".join(HOOK_EVENTS))
    fields["events"] = json.dumps(sorted(events))
    if active is not None:
        fields["active"] = int(active)
    return changed_hook(req, hook, fields, "updated hook %d")


def changed_hook(req, hook, fields, what):
    with req.transaction() as db:
        write_hook(req, db, hook["id"], fields)
        req.effect(what % hook["id"])
    return hook_json(req.app, req.app.store.one("SELECT * FROM hooks WHERE id = ?", hook["id"]))


@route("GET", REPO_HOOKS + "/{hook_id:int}/config")
@route("GET", ORG_HOOKS + "/{hook_id:int}/config")
def get_hook_config(req, hook_id, owner=None, repo=None, org=None):
    return hook_json(req.app, find_hook(req, owner, repo, org, hook_id)[1])["config"]


@route("PATCH", REPO_HOOKS + "/{hook_id:int}/config")
@route("PATCH", ORG_HOOKS + "/{hook_id:int}/config")
def update_hook_config(req, hook_id, owner=None, repo=None, org=None):
    fields = checked_config(req, req.json(), creating=False)
    _, hook = find_hook(req, owner, repo, org, hook_id, fields.get("url"))
    return changed_hook(req, hook, fields, "updated the config of hook %d")["config"]


@route("DELETE", REPO_HOOKS + "/{hook_id:int}")
@route("DELETE", ORG_HOOKS + "/{hook_id:int}")
def delete_hook(req, hook_id, owner=None, repo=None, org=None):
    _, hook = find_hook(req, owner, repo, org, hook_id)
    return delete_row(req, "hooks", hook["id"], "hook %d" % hook["id"])


@route("POST", REPO_HOOKS + "/{hook_id:int}/pings")
@route("POST", ORG_HOOKS + "/{hook_id:int}/pings")
def ping_hook(req, hook_id, owner=None, repo=None, org=None):
    _, hook = find_hook(req, owner, repo, org, hook_id)
    with req.transaction() as db:
        queue_ping(req, db, hook["id"])
        req.effect("pinged hook %d" % hook["id"])
    req.app.deliveries_waiting.set()
    return 204, None


@route("POST", REPO_HOOKS + "/{hook_id:int}/tests")
def test_hook(req, owner, repo, hook_id):
    """A push event for the default branch's latest commit, if the hook takes pushes (as GitHub's test)."""
    row, hook = find_hook(req, owner, repo, None, hook_id)
    events = json.loads(hook["events"])
    with open_repo(req.app, row["id"]) as git:
        ref = "refs/heads/" + row["default_branch"]
        sha = git.refs[ref.encode()].decode() if ref.encode() in git.refs else None
    if sha is not None and ("push" in events or "*" in events):
        with req.transaction() as db:
            queue_delivery(db, hook["id"], "push", None, row["id"], {"ref": ref, "before": sha, "after": sha},
                           chain_of_request(req))
            req.effect("tested hook %d" % hook["id"])
        req.app.deliveries_waiting.set()
    return 204, None


def delivery_json(row, detail=False):
    out = {"id": row["id"], "guid": row["guid"], "delivered_at": row["delivered_at"],
           "redelivery": bool(row["redelivery"]), "duration": row["duration"] or 0, "status": row["status"] or
           row["state"], "status_code": row["status_code"] or 0, "event": row["event"], "action": row["action"],
           "installation_id": None, "repository_id": row["repo_id"], "throttled_at": None}
    if detail:
        out["url"] = ""
        out["request"] = {"headers": json.loads(row["request_headers"] or "{}"),
                          "payload": json.loads(row["payload"]) if row["payload"] else None}
        out["response"] = {"headers": json.loads(row["response_headers"] or "{}"), "payload": row["response_body"]}
    return out


@route("GET", REPO_HOOKS + "/{hook_id:int}/deliveries")
@route("GET", ORG_HOOKS + "/{hook_id:int}/deliveries")
def list_deliveries(req, hook_id, owner=None, repo=None, org=None):
    """Newest first."""
    _, hook = find_hook(req, owner, repo, org, hook_id)
    rows = req.app.store.all("SELECT * FROM hook_deliveries WHERE hook_id = ? ORDER BY id DESC", hook["id"])
    return [delivery_json(r) for r in req.paginate(rows)]


def find_delivery(req, hook, delivery_id):
    return one_or_404(req, "SELECT * FROM hook_deliveries WHERE id = ? AND hook_id = ?", int(delivery_id), hook["id"])


@route("GET", REPO_HOOKS + "/{hook_id:int}/deliveries/{delivery_id:int}")
@route("GET", ORG_HOOKS + "/{hook_id:int}/deliveries/{delivery_id:int}")
def get_delivery(req, hook_id, delivery_id, owner=None, repo=None, org=None):
    _, hook = find_hook(req, owner, repo, org, hook_id)
    return delivery_json(find_delivery(req, hook, delivery_id), detail=True)


@route("POST", REPO_HOOKS + "/{hook_id:int}/deliveries/{delivery_id:int}/attempts")
@route("POST", ORG_HOOKS + "/{hook_id:int}/deliveries/{delivery_id:int}/attempts")
def redeliver(req, hook_id, delivery_id, owner=None, repo=None, org=None):
    """The same payload again, as a new delivery marked a redelivery."""
    _, hook = find_hook(req, owner, repo, org, hook_id)
    return queue_redelivery(req, hook, find_delivery(req, hook, delivery_id))


def queue_redelivery(req, hook, old):
    with req.transaction() as db:
        queue_delivery(db, hook["id"], old["event"], old["action"], old["repo_id"], json.loads(old["subject"]),
                       json.loads(old["chain"]), old["payload"], redelivery=True)
        req.effect("redelivered delivery %d of hook %d" % (old["id"], hook["id"]))
    req.app.deliveries_waiting.set()
    return 202, {}


# -- payloads: what happened (a delivery's subject), in GitHub's shape ------------------------------------

def render_payload(app, delivery):
    """The payload of a delivery's event, with the repository, the sender, the organization and the chain."""
    subject, chain = json.loads(delivery["subject"]), json.loads(delivery["chain"])
    payload = event_body(app, repo_by_id(app.store, delivery["repo_id"]), delivery["event"], delivery["action"],
                         subject, chain.get("actor"))
    if "installation" in subject:           # to an App's hook: the installation whose token acts on it
        payload["installation"] = {"id": subject["installation"], "node_id": node_id("Installation",
                                                                                      subject["installation"])}
    payload["agentgit"] = chain
    return payload


def event_body(app, repo_row, event, action, subject, actor):
    """An event in GitHub's shape, as a webhook delivers it and as the run it starts reads it
    (``github.event``): its own fields, the repository, its organization, and whoever caused it."""
    store = app.store
    sender = account_by_login(store, actor) if actor else None
    payload = {"repository": repo_json(app, repo_row), "sender": user_json(app, sender) if sender else None}
    owner = account_by_id(store, repo_row["owner_id"])
    if owner["kind"] == "org":
        payload["organization"] = user_json(app, owner)
    if action:
        payload["action"] = action
    payload.update(EVENT_PAYLOADS.get(event, lambda *a: {})(app, repo_row, subject))
    return payload


def push_payload(app, repo_row, subject):
    before, after, ref = subject["before"], subject["after"], subject["ref"]
    with open_repo(app, repo_row["id"]) as git:
        commits = [] if after == ZERO_SHA else new_commits(git, ref, before, after)
        head = git[after.encode()] if after != ZERO_SHA else None
        name = full_name(repo_row)
        shown = [push_commit(commit_json(app, name, c)) for c in commits[-MAX_PUSH_COMMITS:]]
        head_commit = push_commit(commit_json(app, name, head)) if head is not None else None
    return {"ref": ref, "before": before, "after": after, "created": before == ZERO_SHA, "deleted": after == ZERO_SHA,
            "forced": False, "base_ref": None, "compare": "%s/%s/compare/%s...%s" % (app.url, name, before[:12],
                                                                                     after[:12]),
            "commits": shown, "head_commit": head_commit,
            "pusher": {"name": (head_commit or {}).get("committer", {}).get("name"), "email": None}}


def new_commits(git, ref, before, after):
    """What a push brought, oldest first: since ``before``, or for a new ref what no other branch has."""
    if before != ZERO_SHA:
        return commits_between(git, before, after)
    others = [sha for name, sha in git.refs.as_dict(b"refs/heads/").items() if b"refs/heads/" + name != ref.encode()]
    return [entry.commit for entry in git.get_walker(include=[after.encode()], exclude=others)][::-1]


def push_commit(c):
    """A commit as a push payload lists it."""
    return {"id": c["sha"], "tree_id": c["commit"]["tree"]["sha"], "distinct": True, "message": c["commit"]["message"],
            "timestamp": c["commit"]["committer"]["date"], "url": c["html_url"], "author": c["commit"]["author"],
            "committer": c["commit"]["committer"], "added": [], "removed": [], "modified": []}


def ref_payload(app, repo_row, subject):
    prefix = "refs/heads/" if subject["ref_type"] == "branch" else "refs/tags/"
    return {"ref": subject["ref"][len(prefix):], "ref_type": subject["ref_type"],
            "master_branch": repo_row["default_branch"], "description": repo_row["description"],
            "pusher_type": "user"}


def issue_payload(app, repo_row, subject):
    issue = app.store.one("SELECT * FROM issues WHERE id = ?", subject["issue_id"])
    out = {"issue": issue_json(app, repo_row, issue) if issue else None}
    comment = app.store.one("SELECT * FROM comments WHERE id = ?", subject["comment_id"]) \
        if "comment_id" in subject else None
    if comment is not None:
        out["comment"] = comment_json(app, repo_row, issue["number"], comment)
    return dict(out, **detail_fields(app, subject))


def pull_payload(app, repo_row, subject):
    issue, pull = pull_rows(app, subject["issue_id"])
    if issue is None:
        return {"number": None, "pull_request": None}
    return dict({"number": issue["number"], "pull_request": pull_json(app, repo_row, issue, pull, detail=True)},
                **detail_fields(app, subject))


def detail_fields(app, subject):
    """An issue event's own fields as a webhook names them: label, assignee, milestone, changes."""
    out = {key: subject[key] for key in ("label", "milestone") if key in subject}
    if "assignee" in subject:
        account = account_by_id(app.store, subject["assignee"])
        out["assignee"] = user_json(app, account) if account else None
    if "rename" in subject:
        out["changes"] = {"title": {"from": subject["rename"]["from"]}}
    return out


def review_payload(app, repo_row, subject):
    review = app.store.one("SELECT * FROM reviews WHERE id = ?", subject["review_id"])
    issue = app.store.one("SELECT * FROM issues WHERE id = ?", subject["issue_id"])
    return dict(pull_payload(app, repo_row, subject), review=review_json(app, repo_row, issue, review) if review and
                issue else None)


def release_payload(app, repo_row, subject):
    release = app.store.one("SELECT * FROM releases WHERE id = ?", subject["release_id"])
    return {"release": release_json(app, repo_row, release) if release else None}


def check_run_payload(app, repo_row, subject):
    run = app.store.one("SELECT * FROM check_runs WHERE id = ?", subject["check_run_id"])
    return {"check_run": check_run_json(app, repo_row, run) if run else None}


def dispatch_payload(app, repo_row, subject):
    return {"branch": subject["branch"], "client_payload": subject["client_payload"]}


def workflow_run_payload(app, repo_row, subject):
    """The run and its workflow, as they stood when the event happened (its status and conclusion then)."""
    run = app.store.one("SELECT * FROM workflow_runs WHERE id = ?", subject["run_id"])
    if run is None:
        return {"workflow_run": None}
    wf = app.store.one("SELECT * FROM workflows WHERE id = ?", run["workflow_id"])
    return {"workflow_run": dict(run_json(app, repo_row, run), **subject["then"]),
            "workflow": workflow_json(app, repo_row, wf, wf["path"])}


def workflow_job_payload(app, repo_row, subject):
    job = app.store.one("SELECT * FROM workflow_jobs WHERE id = ?", subject["job_id"])
    run = app.store.one("SELECT * FROM workflow_runs WHERE id = ?", job["run_id"]) if job else None
    if run is None:
        return {"workflow_job": None}
    return {"workflow_job": dict(job_json(app, repo_row, run, job), **subject["then"])}


EVENT_PAYLOADS = {"push": push_payload, "create": ref_payload, "delete": ref_payload, "issues": issue_payload,
                  "issue_comment": issue_payload, "pull_request": pull_payload, "pull_request_review": review_payload,
                  "release": release_payload, "check_run": check_run_payload, "workflow_run": workflow_run_payload,
                  "workflow_job": workflow_job_payload, "repository_dispatch": dispatch_payload}


# -- the delivery worker ----------------------------------------------------------------------------------

# waiting: queued (a retry once its time has come), or claimed by a worker whose lease lapsed; (now, now)
WAITING = "(state = 'queued' AND (not_before IS NULL OR not_before <= ?)) OR (state = 'delivering' AND leased_until < ?)"


def claim_delivery(store):
    """The oldest waiting delivery (or one whose worker's lease lapsed), claimed for LEASE_SECONDS; None.
    Looked for first without a write lock: an idle outbox costs the requests nothing."""
    if store.one("SELECT 1 FROM hook_deliveries WHERE %s LIMIT 1" % WAITING, time.time(), time.time()) is None:
        return None
    with store.transaction() as db:
        row = db.execute("SELECT * FROM hook_deliveries WHERE %s ORDER BY id LIMIT 1" % WAITING,
                         (time.time(), time.time())).fetchone()
        if row is None:
            return None
        db.execute("UPDATE hook_deliveries SET state = 'delivering', leased_until = ? WHERE id = ?",
                   (time.time() + LEASE_SECONDS, row["id"]))
    return row


def deliver(app, delivery):
    """One attempt: the payload rendered (once) and signed, POSTed through the egress path, the answer
    recorded; a hook deleted meanwhile drops its delivery."""
    store = app.store
    hook = store.one("SELECT * FROM hooks WHERE id = ?", delivery["hook_id"])
    if hook is None:
        return
    withheld = withheld_from_app(app, delivery)
    if withheld:
        return give_up(store, delivery, withheld)
    payload = delivery["payload"]
    if payload is None:
        try:
            payload = json.dumps(render_payload(app, delivery))
        except Exception as gone:       # (dulwich's missing objects are no LookupError)
            # what the event was about went away before its first attempt (an issue deleted, a repository's
            # objects pruned): the delivery fails, saying so, and the worker goes on with the next one
            return give_up(store, delivery, "could not render the payload: %s" % gone.__class__.__name__)
        with store.transaction() as db:
            db.execute("UPDATE hook_deliveries SET payload = ? WHERE id = ?", (payload, delivery["id"]))
    body = payload.encode() if hook["content_type"] == "json" else urllib.parse.urlencode({"payload": payload}).encode()
    headers = {"Accept": "*/*", "User-Agent": "GitHub-Hookshot/agentgit", "X-GitHub-Event": delivery["event"],
               "X-GitHub-Delivery": delivery["guid"], "X-GitHub-Hook-ID": str(hook["id"]),
               "X-GitHub-Hook-Installation-Target-Type": "repository" if hook["repo_id"] else "organization" if
               hook["org_id"] else "integration",
               "X-GitHub-Hook-Installation-Target-ID": str(hook["repo_id"] or hook["org_id"] or hook["app_id"]),
               "Content-Type": "application/json" if hook["content_type"] == "json" else
               "application/x-www-form-urlencoded"}
    secret = hook_secret(app, hook)
    if secret:
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest()
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    started = time.monotonic()
    code, status, response_headers, answer = send(app, hook["url"], body, headers, hook["insecure_ssl"] != "1")
    delivered = 200 <= code < 300
    with store.transaction() as db:
        db.execute("UPDATE hook_deliveries SET state = ?, status_code = ?, status = ?, duration = ?, request_headers = ?,"
                   " response_headers = ?, response_body = ?, delivered_at = ?, leased_until = NULL WHERE id = ?",
                   ("delivered" if delivered else "failed", code, status,
                    round(time.monotonic() - started, 3), json.dumps(headers), json.dumps(response_headers),
                    answer[:MAX_RESPONSE_KEPT].decode("utf-8", "replace"), now(), delivery["id"]))
        if not delivered and delivery["attempt"] <= app.config.webhook_retries:
            # the operator's opt-in (serve --webhook-retries): the same payload again, later each time
            queue_delivery(db, hook["id"], delivery["event"], delivery["action"], delivery["repo_id"],
                           json.loads(delivery["subject"]), json.loads(delivery["chain"]), payload, redelivery=True,
                           attempt=delivery["attempt"] + 1,
                           not_before=time.time() + RETRY_AFTER * 4 ** (delivery["attempt"] - 1))


def give_up(store, delivery, why):
    """A delivery that is not sent, recorded failed with why (no retry: nothing about it would change)."""
    with store.transaction() as db:
        db.execute("UPDATE hook_deliveries SET state = 'failed', status_code = 0, status = ?, delivered_at = ?,"
                   " leased_until = NULL WHERE id = ?", (why, now(), delivery["id"]))


def withheld_from_app(app, delivery):
    """Why an App's delivery about a repository is not sent (its installation is gone, suspended or revoked,
    or its installer can no longer read the repository: an installation carries her authority, live), or None."""
    installation_id = json.loads(delivery["subject"]).get("installation")
    if installation_id is None:
        return None
    store = app.store
    row = store.one("SELECT i.installer_id, i.suspended_at, g.revoked_at FROM app_installations i JOIN task_grants g"
                    " ON g.id = i.grant_id WHERE i.id = ?", installation_id)
    if row is None or row["suspended_at"] or row["revoked_at"]:
        return "withheld: installation %d is uninstalled, suspended or revoked" % installation_id
    repo_row = repo_by_id(store, delivery["repo_id"])
    installer = account_by_id(store, row["installer_id"])
    if repo_row is None or not decide(store, Principal(user=installer), "read_code", Resource.repo(repo_row)).allowed:
        return "withheld: installation %d's installer can no longer read the repository" % installation_id
    return None


def send(app, url, body, headers, verify):
    """(status code, status, response headers, body) of a POST to ``url``; code 0 with the reason when it
    could not be made (a non-public address, a refused connection, a timeout, a certificate refused)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        address = public_address(parts.hostname, port, allows_loopback(app), what="the hook's host", status=502)
        conn = outbound_connection(parts.scheme, parts.hostname, port, address, DELIVERY_TIMEOUT, verify)
        with within_deadline(conn, DELIVERY_TIMEOUT):
            conn.request("POST", (parts.path or "/") + ("?" + parts.query if parts.query else ""), body, headers)
            response = conn.getresponse()
            answer = response.read(MAX_RESPONSE_KEPT + 1)
        conn.close()
        return response.status, "OK" if 200 <= response.status < 300 else "HTTP %d" % response.status, \
            dict(response.getheaders()), answer
    except HTTPError as refused:
        return 0, refused.message, {}, b""
    except (OSError, ValueError) as failed:         # refused, reset, timed out, not HTTP
        return 0, "could not deliver: %s" % (failed.__class__.__name__), {}, b""


class DeliveryWorker(Worker):
    """Sends the outbox's deliveries, one at a time, oldest first; woken when a request queues one
    (app.deliveries_waiting), and every half second for what another process or a restart left."""

    def __init__(self, app):
        super().__init__("agentgit-deliveries", app.deliveries_waiting, 0.5, DELIVERY_TIMEOUT + 1)
        self.app = app

    def claim(self):
        return claim_delivery(self.app.store)

    def work(self, delivery):
        deliver(self.app, delivery)
