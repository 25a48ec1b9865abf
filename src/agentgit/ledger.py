"""The enforcement ledger: decide → ask for or spend an approval → audit → record the intent and the
side effect. One piece every surface goes through: REST, GraphQL and MCP by their Request (which is a
Ledger with its HTTP input), the Git push path for each ref it decides, the command line as the local
operator; so an approval is spent in one place and every surface's audit rows read alike."""

import contextlib
import dataclasses

from agentgit.config import crash_point, now
from agentgit.errors import HTTPError
from agentgit.gitstore import ZERO_SHA, branch_sha, changes_brought
from agentgit.accounts import repo_by_id
from agentgit.guardrails import paths_judged, read_of
from agentgit.policy import ACTIONS, STEP_UP_SECONDS, Decision, Resource, decide
from agentgit.audit import audit_append, audit_row
from agentgit.approvals import ask_for_approval, give_back_approval, spend_approval
from agentgit.intents import forget_intents, ref_now, settle_intent, write_intent
from agentgit.outbox import chain_of, queue_event, ref_events


class Ledger:
    """What one principal, on one surface, is allowed, asked, refused and did, on its way into the
    audit chain. A Request is one; the command line makes one for the operator
    (installation.operator_ledger); authentication one for a token it refuses."""

    def __init__(self, app, principal, surface):
        self.start_ledger(app, principal, surface)

    def start_ledger(self, app, principal, surface):
        self.app, self.principal, self.surface = app, principal, surface
        self.pending = []          # allowed mutations waiting for their audit row
        self.effects = []          # what the mutations did, for those rows
        self.intents = []          # refs moved (or meant to be) whose rows are not yet written
        self.audit_id = None       # the last audit row written (a request answers X-Agentgit-Audit-Id)
        self.announcements = []    # webhook events of this request's changes, queued with its audit rows

    def write(self, decision, side_effect, db=None):
        """The audit row of ``decision`` with what came of it: in ``db``'s transaction, with the act it
        records (a push's row for each ref once git has or has not moved it), or in one of its own that
        only appends the row. The one writer of the chain's rows."""
        if db is None:
            with self.app.store.transaction(records_only=True) as own:
                return self.write(decision, side_effect, own)
        self.audit_id = audit_append(db, self.app.key, self.principal, self.surface, decision, side_effect)
        return self.audit_id

    def record(self, action, resource_name, reasons, side_effect, db=None):
        """An allowed act decided outside decide() (the operator's, with the data directory; an agent's
        own consent on the command line), written as write() does."""
        return self.write(Decision("allow", action, resource_name, list(reasons)), side_effect, db)

    def refuse(self, action, resource_name, reasons, side_effect=None, hidden=False):
        """A refusal decided outside decide() (a closed registration, a token for another audience, a
        ref name git would write that is not one, a failed sign-in), recorded as decide()'s are;
        returns its Decision."""
        return self.record_refusal(Decision("deny", action, resource_name, list(reasons), hidden=hidden), side_effect)

    def record_refusal(self, decision, side_effect=None):
        """The audit row of a decision that did not allow: one made here, or a decide() answer a caller
        weighed itself (an authority check that stands for another action, an attempt that is recorded
        however it ends), in a transaction of its own so that it stays whatever happens next."""
        self.write(decision, side_effect)
        return decision

    def decide_each(self, action, resource, context, refused_text=None):
        """decide() for one item of several (each ref of a push; check() asks it for one): an approval it
        needs is asked for, and that audited; one it holds is spent (one already used is a refusal that
        says so); a refusal is audited, with ``refused_text`` as its side effect. Never raises: returns
        (decision, (approval id, approval URL) when one was asked for, else None)."""
        decision = decide(self.app.store, self.principal, action, resource, context)
        if decision.effect == "needs_approval":
            decision, approval_id, url = ask_for_approval(self.app, self.principal, decision, context)
            self.record_refusal(decision, "approval %s requested" % approval_id)
            return decision, (approval_id, url)
        if decision.allowed and decision.approval is not None and not spend_approval(self.app.store, decision.approval):
            decision = dataclasses.replace(decision, effect="deny", status=409,
                                           reasons=["That approval was just used; ask for another"])
        if not decision.allowed:
            self.record_refusal(decision, refused_text)
        else:
            self.note_if_read(action, resource, context)
        return decision, None

    def note_if_read(self, action, resource, context):
        """An allowed ``action`` of a task token that reads something private: noted (note_read)."""
        if self.principal.grant is not None:
            read = read_of(action, ACTIONS[action], resource, context)
            if read is not None:
                self.note_read(*read)

    def note_read(self, kind, resource_name, what):
        """A task token read something that decides where its task may write next (rule_information_flow):
        kept under the task, once, whichever token or sub-agent of it read it, across restarts."""
        key = (self.principal.grant["task_id"], kind, resource_name, what)
        if key in self.app.reads_noted:
            return
        with self.app.store.transaction(records_only=True) as db:
            db.execute("INSERT INTO task_reads (grant_id, kind, resource, what, at) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT DO NOTHING", key + (now(),))
        if len(self.app.reads_noted) > 100000:
            self.app.reads_noted.clear()
        self.app.reads_noted.add(key)

    def check(self, action, resource, **context):
        """decide_each() for one thing, its refusal raised as the surface's error (an approval asked for
        is a 403 naming it)."""
        # Decide before acting: inside a transaction a refusal's audit row would roll back with it.
        if self.app.store.db.in_transaction:
            raise RuntimeError("authorize %s before opening the transaction" % action)
        return self.allowed_or_raise(*self.decide_each(action, resource, context))

    def allowed_or_raise(self, decision, asked):
        """decide_each()'s answer, or its refusal raised as the surface's error (an approval asked for
        is a 403 naming it)."""
        if asked is not None:
            raise HTTPError(403, decision.reasons[0], extra={"approval_id": asked[0], "approval_url": asked[1]})
        if not decision.allowed:
            raise self.refusal(decision)
        return decision

    def check_standing(self):
        """check() of read_account on the caller's own account, the least any account may do. Its answer
        changes only with what a commit changes (a suspension, a revocation; expiries are checked as the
        token is read), so for a token it is remembered until the next commit (Store.cached), keyed by
        everything of the request it could depend on; a refusal goes through check() each time."""
        principal = self.principal
        if principal.token_id is not None:
            key = ("standing", principal.token_id, principal.user["id"], principal.runtime, principal.runtime_id,
                   principal.certificate, principal.stepped_up_at)
            decision = self.app.store.cached(key, lambda: decide(self.app.store, principal, "read_account",
                                                                 Resource.account(principal.user), {}))
            if decision.allowed:
                return decision
        return self.check("read_account", Resource.account(principal.user))

    def authorize(self, action, resource, **context):
        """check(), and for a mutation (or a sensitive read) keep the decision for the audit row its side
        effect will get."""
        decision = self.check(action, resource, **context)
        if ACTIONS[action].mutation or ACTIONS[action].sensitive:
            self.pending.append(decision)
        return decision

    def can(self, action, resource):
        """decide() for filtering lists: an item the caller may not see is left out, not reported (one
        shown is read: GraphQL reads through here)."""
        allowed = decide(self.app.store, self.principal, action, resource).allowed
        if allowed:
            self.note_if_read(action, resource, {})
        return allowed

    def refusal(self, decision):
        """404 for what the caller may not know exists, 401 for anonymous callers, 403 otherwise.
        Git clients send credentials only after a 401, so there an anonymous caller always gets 401."""
        if self.surface == "git" and self.principal.user is None:
            return HTTPError(401, "Authentication required")
        if decision.hidden:
            return HTTPError(404, "Not Found")
        if self.principal.user is None:
            return HTTPError(401, "Requires authentication")
        if decision.effect == "needs_step_up":       # RFC 9470: the client knows to ask for a fresh factor
            return HTTPError(401, decision.reasons[0], step_up=True,
                             headers={"WWW-Authenticate": 'Bearer error="insufficient_user_'
                             'authentication", error_description="a TOTP code is required", max_age=%d' % STEP_UP_SECONDS})
        headers = {"X-Accepted-OAuth-Scopes": decision.scope} if decision.scope else {}
        return HTTPError(decision.status or 403, decision.reasons[0], headers=headers)

    def effect(self, text):
        self.effects.append(text)

    def move_ref(self, git, repo_id, ref, old, new, follow_up=None):
        """The one way a request moves a ref: its intent written first, with the rows of this request's
        pending mutations (a crash after the move is then recorded truthfully at the next start), then a
        compare-and-swap from ``old`` to ``new`` (40 zeros: create, delete). False when ``ref`` was not ``old``."""
        repo = repo_by_id(self.app.store, repo_id)
        if new != ZERO_SHA and paths_judged(self.app.store, self.principal, repo):
            # what the move brings, judged: its row is written with the request's others (and its intent's)
            self.pending.append(self.allowed_or_raise(*self.judge_changes(git, repo, ref, old, new)))
        rows = [(audit_row(self.principal, self.surface, d), d.approval) for d in self.pending]
        with self.app.store.transaction() as db:
            self.intents.append(write_intent(db, repo_id, ref, old, new, rows, follow_up))
        if old == ZERO_SHA:
            moved = git.refs.add_if_new(ref.encode(), new.encode())
        elif new == ZERO_SHA:
            moved = git.refs.remove_if_equals(ref.encode(), old.encode())
        else:
            moved = git.refs.set_if_equals(ref.encode(), old.encode(), new.encode())
        crash_point("ref moved")
        return moved

    def judge_changes(self, git, repo, ref, old, new):
        """decide_each() of change_paths for what moving ``ref`` from ``old`` to ``new`` brings into it:
        every commit not already on ``old`` or on the default branch, each path it changes (a task
        grant's path rules read them). Returns decide_each()'s (decision, asked)."""
        changes = changes_brought(git, new, (old, branch_sha(git, repo["default_branch"])))
        return self.decide_each("change_paths", Resource.repo(repo), {"ref": ref, "sha": new, "changes": changes})

    @contextlib.contextmanager
    def transaction(self, records_only=False):
        """A write transaction whose commit includes the audit rows of this request's allowed mutations,
        so a side effect and its record land together or not at all. ``records_only``: as
        Store.transaction's (the request writes nothing but its audit rows)."""
        with self.app.store.transaction(records_only) as db:
            yield db
            queued = self.flush_audit(db)
        if queued:
            self.app.deliveries_waiting.set()

    def announce(self, repo_id, event, action, subject):
        """A webhook event of a change this request makes: queued in the transaction that writes its audit
        rows (outbox.queue_event), naming them."""
        self.announcements.append((repo_id, event, action, subject))

    def flush_audit(self, db, outcome=None):
        side_effect = "; ".join(self.effects) or outcome
        for decision in self.pending:
            self.write(decision, side_effect, db)
        for intent in [db.execute("SELECT * FROM intents WHERE id = ?", (i,)).fetchone() for i in self.intents]:
            if intent is not None and ref_now(self.app, intent["repo_id"], intent["ref"]) == intent["new"]:
                for event, action, subject in ref_events(intent["ref"], intent["old"], intent["new"]):
                    self.announce(intent["repo_id"], event, action, subject)
        forget_intents(db, self.intents)
        chain = chain_of(self.chain_fields(), self.audit_id)
        queued = sum(queue_event(db, repo_id, event, action, subject, chain)
                     for repo_id, event, action, subject in self.announcements)
        self.pending, self.effects, self.intents, self.announcements = [], [], [], []
        return queued

    def chain_fields(self):
        """Who acts here, as an audit row names them (its actor, kind, delegator, task and grant)."""
        p = self.principal
        return {"actor": p.login, "user_kind": p.kind, "delegator": p.delegator,
                "task": p.grant["task"] if p.grant else None, "grant_id": p.grant["public_id"] if p.grant else None}

    def settle(self, outcome, failed):
        """Record allowed mutations that never reached a transaction with how they ended, and what
        happened to the refs they moved. One that failed (a merge that conflicts) and moved nothing
        gives back the approval it spent: the human's yes still holds."""
        with self.app.store.transaction() as db:
            intents = [db.execute("SELECT * FROM intents WHERE id = ?", (i,)).fetchone() for i in self.intents]
            settled = [settle_intent(db, self.app, intent) for intent in intents if intent is not None]
            if any(moved for _, moved in settled):
                outcome = "; ".join(text for text, moved in settled if moved) + "; then " + outcome
            elif failed:
                for decision in self.pending:
                    if decision.approval is not None:
                        outcome += give_back_approval(db, decision.approval)
            self.flush_audit(db, outcome)
