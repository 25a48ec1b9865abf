"""Git Smart HTTP: info/refs, upload-pack and receive-pack through git or dulwich."""

import dataclasses
import functools
import re

from agentgit.config import MAX_PACK_BODY, crash_point, now
from agentgit.errors import HTTPError
from agentgit.gitstore import ZERO_SHA, open_repo, repo_dir, valid_ref_name
from agentgit.accounts import lookup_repo
from agentgit.guardrails import paths_judged
from agentgit.policy import Resource
from agentgit.audit import audit_row
from agentgit.approvals import give_back_approval
from agentgit.intents import forget_intents, move_text, write_intent
from agentgit.outbox import chain_of, queue_event, ref_events
from agentgit.routing import route
from agentgit.request import GunzipReader


# The protocol (gitprotocol-http): GET info/refs?service=... advertises refs; POST git-upload-pack
# sends a pack to the client; POST git-receive-pack takes one. Access is decided before any pack is
# read or written. For pushes we read the command list (the pkt-lines before the pack) ourselves,
# decide every ref with decide(), and hand the denials to the engine, which refuses those refs the
# way GitHub does: the others still land, and git prints our reason. Ref updates are compare-and-swap
# in both engines (git's ref transaction; dulwich's set_if_equals).

GIT_SERVICES = ("git-upload-pack", "git-receive-pack")


class ChunkedWriter:
    """The response body in HTTP/1.1 chunked coding, so a pack streams without a known length."""

    def __init__(self, wfile):
        self.wfile = wfile

    def write(self, data):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        return len(data)

    def close(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class ReplayReader:
    """A reader that first returns bytes already taken from ``inner`` and then the rest of it."""

    def __init__(self, head, inner):
        self.head, self.inner = bytes(head), inner

    def read(self, size=65536):
        if self.head:
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.inner.read(size)


def read_exactly(reader, n, into):
    data = b""
    while len(data) < n:
        chunk = reader.read(n - len(data))
        if not chunk:
            raise HTTPError(400, "Truncated git request")
        data += chunk
    into += data
    return data


def read_push_commands(reader):
    """The ref updates at the head of a receive-pack request: ([(old, new, ref)], bytes consumed),
    each ref the exact bytes git will write."""
    consumed, commands = bytearray(), []
    while True:
        size = read_exactly(reader, 4, consumed)
        if size == b"0000":
            return commands, consumed
        try:
            length = int(size, 16)
        except ValueError:
            raise HTTPError(400, "Malformed pkt-line in push")
        if length < 4 or length > 65520:
            raise HTTPError(400, "Malformed pkt-line in push")
        line = read_exactly(reader, length - 4, consumed).split(b"\0")[0].rstrip(b"\n")
        if line.startswith(b"shallow "):
            continue
        parts = line.split(b" ")
        if len(parts) != 3 or not all(re.fullmatch(rb"[0-9a-f]{40}", p) for p in parts[:2]):
            raise HTTPError(400, "Malformed ref update in push: %r" % line[:200])
        commands.append((parts[0].decode(), parts[1].decode(), parts[2]))


def git_repo(req, owner, name, action):
    """The repository behind a Git URL once ``action`` is allowed. Git clients send credentials only
    after a 401, so an anonymous caller gets 401 for anything it may not see (existing or not, so as
    not to reveal which); a signed-in one gets 404, or 403 with the reason."""
    name = name[:-4] if name.endswith(".git") else name
    row = lookup_repo(req.app.store, owner, name)
    if row is None:
        raise HTTPError(401 if req.principal.user is None else 404, "Repository not found")
    req.check(action, Resource.repo(row))
    return row


def start_git_response(req, content_type):
    handler = req.handler
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Cache-Control", "no-cache, max-age=0, must-revalidate")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    return ChunkedWriter(handler.wfile)


def git_body(req):
    raw = req.body(MAX_PACK_BODY)
    encoding = (req.headers.get("Content-Encoding") or "").lower()
    if encoding in ("gzip", "x-gzip"):
        return GunzipReader(raw, MAX_PACK_BODY)
    if encoding not in ("", "identity"):
        raise HTTPError(415, "Unsupported Content-Encoding %s" % encoding)
    return raw


def expect_content_type(req, service):
    if req.headers.get("Content-Type") != "application/x-%s-request" % service:
        raise HTTPError(415, "Content-Type must be application/x-%s-request" % service)


@route("GET", "/{owner}/{repo}/info/refs", "git")
def git_info_refs(req, owner, repo):
    service = req.query.get("service")
    if service not in GIT_SERVICES:
        raise HTTPError(403, "Only the smart HTTP protocol is served; ask for ?service=git-upload-pack")
    row = git_repo(req, owner, repo, "read_code" if service == "git-upload-pack" else "push_branch")
    out = start_git_response(req, "application/x-%s-advertisement" % service)
    req.app.git_engine.advertise(repo_dir(req.app, row["id"]), service, req.headers.get("Git-Protocol", ""), out)
    out.close()


@route("POST", "/{owner}/{repo}/git-upload-pack", "git")
def git_upload_pack(req, owner, repo):
    row = git_repo(req, owner, repo, "read_code")
    expect_content_type(req, "git-upload-pack")
    body = git_body(req)
    out = start_git_response(req, "application/x-git-upload-pack-result")
    req.app.git_engine.upload_pack(repo_dir(req.app, row["id"]), req.headers.get("Git-Protocol", ""), body, out)
    out.close()


@route("POST", "/{owner}/{repo}/git-receive-pack", "git")
def git_receive_pack(req, owner, repo):
    row = git_repo(req, owner, repo, "push_branch")
    expect_content_type(req, "git-receive-pack")
    body = git_body(req)
    commands, consumed = read_push_commands(body)
    resource = Resource.repo(row)
    allowed, denied, ff_only = [], {}, {}
    for old, new, raw_ref in commands:
        action = "create_branch" if old == ZERO_SHA else "delete_branch" if new == ZERO_SHA else "push_branch"
        if not valid_ref_name(raw_ref):      # decided on the bytes git would write; the engine refuses it
            req.refuse(action, resource.name, ["%r is not a valid ref name" % raw_ref[:200]], "refused %r" % raw_ref[:200])
            continue
        ref = raw_ref.decode("utf-8")
        # as every surface decides: an approval asked for or spent, a refusal audited (here, per ref)
        decision, _ = req.decide_each(action, resource, {"ref": ref, "sha": new}, "refused %s" % ref)
        if decision.allowed:
            allowed.append((decision, old, new, ref))
            if decision.ff_only:
                ff_only[ref] = "protected branch %s: force pushes are not allowed" % ref[len("refs/heads/"):]
        else:
            denied[ref] = decision.reasons[0]
    path = repo_dir(req.app, row["id"])
    intents, judged, judge = [], {}, None
    if paths_judged(req.app.store, req.principal, row):
        # what each ref brings is read once git has the pack: each is judged, and its intent written,
        # by the update hook's question, before it moves
        judge = functools.partial(judge_pushed_ref, req, row, {entry[3]: entry for entry in allowed},
                                  intents, judged)
    else:
        # written down before git may move them: a crash before record_push is settled at the next start
        with req.app.store.transaction() as db:
            intents += [write_intent(db, row["id"], ref, old, new, [(audit_row(req.principal, "git", decision),
                                                                     decision.approval)])
                        for decision, old, new, ref in allowed]
    out = start_git_response(req, "application/x-git-receive-pack-result")
    try:
        req.app.git_engine.receive_pack(path, req.headers.get("Git-Protocol", ""), ReplayReader(consumed, body),
                                        out, {ref for _, _, _, ref in allowed}, denied, ff_only, judge)
    finally:
        crash_point("push received")
        record_push(req, row, allowed, ff_only, intents, judged)
    out.close()     # only now does the client see the end of the answer: its push is already on record


def judge_pushed_ref(req, row, pending, intents, judged, ref, old, new):
    """The update hook's question for one allowed ref, once git has the pack: change_paths of what the
    ref would bring (a task grant's path rules, the guardrails' paths), and if allowed its intent written. A reason to refuse,
    or None. Runs on the engine's thread (git's hook socket), so it gives its database connection back."""
    try:
        decision, expected_old, expected_new, _ = pending[ref]
        if (old, new) != (expected_old, expected_new):
            return "refused: %s is not the update this push was decided for" % ref
        with open_repo(req.app, row["id"]) as git:
            verdict, _ = req.judge_changes(git, row, ref, old, new)
        judged[ref] = verdict
        if not verdict.allowed:
            return verdict.reasons[0]
        with req.app.store.transaction() as db:
            intents.append(write_intent(db, row["id"], ref, old, new, [
                (audit_row(req.principal, "git", d), d.approval) for d in (decision, verdict)]))
        return None
    finally:
        req.app.store.release()


def record_push(req, row, allowed, ff_only, intents, judged):
    """One audit row per allowed ref update (and one for what it brought, when that was judged), saying
    whether the ref really moved (git may still have refused it: a stale old value when two pushes race,
    a force push to a protected branch, a path outside a task grant's), in the transaction that forgets
    the push's intents."""
    if not allowed:
        return
    with open_repo(req.app, row["id"]) as git:
        current = {ref: git.refs[ref.encode()].decode() if ref.encode() in git.refs else ZERO_SHA
                   for _, _, _, ref in allowed}
    landed, queued = False, 0
    with req.app.store.transaction() as db:
        for decision, old, new, ref in allowed:
            moved = current[ref] == new
            landed = landed or moved
            effect = move_text(ref, old, new, current[ref])
            if not moved and decision.approval is not None:
                effect += give_back_approval(db, decision.approval)
            if not moved and ref in judged and not judged[ref].allowed:
                decision = dataclasses.replace(decision, effect="deny", reasons=judged[ref].reasons)
            elif not moved and ref in ff_only and current[ref] == old:
                # most likely the fast-forward check refused it; say so in the record
                decision = dataclasses.replace(decision, effect="deny", reasons=[ff_only[ref] + " (if not a fast-forward)"])
            req.write(decision, effect, db)
            if ref in judged and judged[ref].allowed:
                req.write(judged[ref], effect + ("" if moved or judged[ref].approval is None else
                                                 give_back_approval(db, judged[ref].approval)), db)
            if moved:
                for event, action, subject in ref_events(ref, old, new):
                    queued += queue_event(db, row["id"], event, action, subject, chain_of(req.chain_fields(),
                                                                                          req.audit_id))
        forget_intents(db, intents)
        if landed:
            db.execute("UPDATE repos SET pushed_at = ? WHERE id = ?", (now(), row["id"]))
    if queued:
        req.app.deliveries_waiting.set()
