"""Lookups: what a REST request names (accounts, repositories), found or 404."""

from agentgit.errors import HTTPError
from agentgit.accounts import account_by_login, lookup_repo
from agentgit.policy import Resource, repo_permission
from agentgit.serializers import repo_json


# Each handler takes the Request and the path's parameters and returns a body (200), or
# (status, body) / (status, body, headers). Every one names its action to req.authorize().


def one_or_404(req, sql, *args):
    """The row ``sql`` finds (a repository's hook, deployment, check run, ... by its id), or 404."""
    row = req.app.store.one(sql, *args)
    if row is None:
        raise HTTPError(404, "Not Found")
    return row


def delete_row(req, table, row_id, what):
    """A row of ``table`` (this module's callers' own names) deleted, audited as ``what``: 204."""
    with req.transaction() as db:
        db.execute("DELETE FROM %s WHERE id = ?" % table, (row_id,))
        req.effect("deleted %s" % what)
    return 204, None


def find_account(req, login, kinds=("human", "agent", "org")):
    row = account_by_login(req.app.store, login)
    if row is None or row["kind"] not in kinds:
        raise HTTPError(404, "Not Found")
    return row


def find_repo(req, owner, name, action="read_code", **context):
    """The repository, once ``action`` on it is allowed; 404 alike for missing and hidden ones.
    ``req.level`` is then the permission the caller holds on it."""
    row = lookup_repo(req.app.store, owner, name)
    if row is None:
        raise HTTPError(404, "Not Found")
    req.level = req.authorize(action, Resource.repo(row), **context).level
    return row


def signed_in(req):
    if req.principal.user is None:
        raise HTTPError(401, "Requires authentication")
    return req.principal.user


def visible_repos(req, rows):
    """The rows the caller may read, each with the caller's permission, via decide()."""
    out = []
    for row in rows:
        if req.can("read_code", Resource.repo(row)):
            out.append((row, repo_permission(req.app.store, req.principal.user, row)[0]))
    return out


def sort_repos(req, pairs, default_sort="full_name"):
    sort = req.query.get("sort", default_sort)
    keys = {"created": "created_at", "updated": "updated_at", "pushed": "pushed_at"}
    if sort in keys:
        pairs.sort(key=lambda p: p[0][keys[sort]] or "", reverse=req.query.get("direction", "desc") == "desc")
    else:
        pairs.sort(key=lambda p: ("%s/%s" % (p[0]["owner_login"], p[0]["name"])).lower(),
                   reverse=req.query.get("direction", "asc") == "desc")
    return [repo_json(req.app, row, perm) for row, perm in req.paginate(pairs)]
