"""Fixtures: a real agentgit on an ephemeral port with a temporary data dir, driven over real sockets.

Copy `server` into your own project's conftest.py to test an agent framework against agentgit.
"""
import http.client
import json
import os
import subprocess
import sys
import urllib.parse

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import agentgit  # noqa: E402

SHARED_TOOLS = os.path.join(ROOT, "..", "shared", "tools")


@pytest.fixture
def server(tmp_path):
    srv = agentgit.make_server(tmp_path / "data", port=0).start()
    yield srv
    srv.stop()


@pytest.fixture(params=["git", "dulwich"])
def engine_server(request, tmp_path):
    """The same server once per Git engine."""
    srv = agentgit.make_server(tmp_path / "data", port=0, git_engine=request.param).start()
    yield srv
    srv.stop()


class Response:
    def __init__(self, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "<%d %s>" % (self.status, self.raw[:300])


def call(srv, method, path, token=None, body=None, headers=None, raw_body=None):
    """One HTTP request to the server; ``path`` is absolute (/api/v3/user)."""
    url = urllib.parse.urlsplit(srv.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    hdrs = {"Accept": "application/vnd.github+json"}
    if token:
        hdrs["Authorization"] = "token " + token
    data = raw_body
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    conn.request(method, path, body=data, headers=hdrs)
    resp = conn.getresponse()
    out = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    conn.close()
    return out


def api(srv, method, path, token=None, body=None, **kw):
    return call(srv, method, "/api/v3" + path, token, body, **kw)


def ext(srv, method, path, token=None, body=None, **kw):
    return call(srv, method, "/api/ext/v1" + path, token, body, **kw)


def git_env(home):
    env = dict(os.environ, HOME=str(home), GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.com")
    env.pop("GIT_ASKPASS", None)
    env.pop("SSH_ASKPASS", None)
    return env


def git(cwd, *args, env=None, check=True):
    """Run the real git; returns CompletedProcess with text output."""
    proc = subprocess.run(["git", *args], cwd=cwd, env=env or git_env(cwd), capture_output=True, text=True,
                          timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError("git %s failed (%d):\n%s\n%s" % (" ".join(args), proc.returncode, proc.stdout,
                                                              proc.stderr))
    return proc


def remote(srv, full_name, token=None):
    url = urllib.parse.urlsplit(srv.url)
    creds = "x:%s@" % token if token else ""
    return "%s://%s%s:%d/%s.git" % (url.scheme, creds, url.hostname, url.port, full_name)


def commit_file(repo_dir, name, text, message=None):
    path = os.path.join(repo_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    git(repo_dir, "add", name)
    git(repo_dir, "commit", "-q", "-m", message or "change %s" % name)
    return git(repo_dir, "rev-parse", "HEAD").stdout.strip()


def shape_checker():
    """GitHub's REST description checker from ../shared, or None where ../shared is absent."""
    if not os.path.exists(os.path.join(SHARED_TOOLS, "github_shape.py")):
        return None
    sys.path.insert(0, SHARED_TOOLS)
    from github_shape import Spec
    return Spec()
