"""Runs gh's own acceptance scripts (cli/cli's acceptance/testdata/*/*.txtar) with the real gh and git
against agentgit, as gh's maintainers run them against github.com.

    python tools/gh_acceptance.py SCRIPT.txtar ...      (make acceptance SCRIPTS="...")

The scripts are gh's, not ours: fetch cli/cli and name them (nothing of them is copied here). This reads
the part of testscript they use (exec, stdout/stderr with their regular expressions, ! for a command
that must fail, cd, mkdir, mv, exists, env, and gh's own defer, sleep, stdout2env, replace, env2upper)
and sets what gh's harness sets: a work directory that is HOME and GH_CONFIG_DIR, GH_HOST, GH_TOKEN, ORG,
SCRIPT_NAME and RANDOM_STRING. agentgit runs in this process, gh and git pointed at it by `connect gh
--mode localhost`, and where act is installed it executes the workflows the scripts dispatch. A sleep is
cut to --sleep seconds at most (a shorter wait is the harder test). It prints a line a script, and the
failing command with its output; it exits 1 if any failed.
"""

import argparse
import os
import random
import re
import shlex
import shutil
import string
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
import agentgit  # noqa: E402

ORG = "acceptance"


class ScriptFailed(Exception):
    pass


def words(line, env):
    """A script line's words: split on spaces, $VAR and ${VAR} expanded outside single quotes, '' a quote."""
    out, word, quoted, i, started = [], "", False, 0, False
    while i < len(line):
        c = line[i]
        if c == "'":
            if quoted and line[i + 1:i + 2] == "'":
                word, i = word + "'", i + 2
                continue
            quoted, started = not quoted, True
        elif quoted:
            word += c
        elif c in " \t":
            if started:
                out.append(word)
            word, started = "", False
        elif c == "#" and not started:
            break
        elif c == "$":
            found = re.match(r"\$(?:\{(\w+)\}|(\w+))", line[i:])
            if found:
                word, started = word + env.get(found.group(1) or found.group(2), ""), True
                i += found.end()
                continue
            word, started = word + c, True
        else:
            word, started = word + c, True
        i += 1
    if started:
        out.append(word)
    return out


def parse_txtar(text):
    """(the script, {file name: contents}) of a txtar archive."""
    parts = re.split(r"^-- (.+?) --$\n?", text, flags=re.MULTILINE)
    return parts[0], dict(zip(parts[1::2], parts[2::2]))


class Script:
    def __init__(self, path, env, sleep_cap):
        self.script, self.files = parse_txtar(open(path, encoding="utf-8").read())
        self.env, self.sleep_cap = env, sleep_cap
        self.cwd = env["WORK"]
        self.stdout = self.stderr = ""
        self.deferred = []

    def run(self):
        for name, text in self.files.items():
            target = os.path.join(self.cwd, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(text)
        try:
            for number, line in enumerate(self.script.splitlines(), 1):
                args = words(line, self.env)
                if args:
                    self.step(number, line, args)
        finally:
            for args in reversed(self.deferred):
                self.execute(args)

    def step(self, number, line, args):
        negated = args[0] == "!"
        name, args = (args[1], args[2:]) if negated else (args[0], args[1:])
        ok = getattr(self, "cmd_" + name.replace("2", "_to_"))(args)
        if ok == negated:
            raise ScriptFailed("line %d: %s\n--- stdout\n%s--- stderr\n%s" % (number, line, self.stdout, self.stderr))

    def path(self, name):
        return os.path.join(self.cwd, name)

    def execute(self, args):
        return subprocess.run(args, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=600)

    def cmd_exec(self, args):
        done = self.execute(args)
        self.stdout, self.stderr = done.stdout, done.stderr
        return done.returncode == 0

    def cmd_stdout(self, args):
        return re.search(args[0], self.stdout, re.MULTILINE) is not None

    def cmd_stderr(self, args):
        return re.search(args[0], self.stderr, re.MULTILINE) is not None

    def cmd_cd(self, args):
        self.cwd = self.path(args[0])
        return True

    def cmd_mkdir(self, args):
        for name in args:
            os.makedirs(self.path(name), exist_ok=True)
        return True

    def cmd_mv(self, args):
        os.replace(self.path(args[0]), self.path(args[1]))
        return True

    def cmd_exists(self, args):
        return all(os.path.exists(self.path(name)) for name in args)

    def cmd_env(self, args, transform=str):
        for pair in args:
            key, _, value = pair.partition("=")
            self.env[key] = transform(value)
        return True

    def cmd_env_to_upper(self, args):
        return self.cmd_env(args, str.upper)

    def cmd_stdout_to_env(self, args):
        self.env[args[0]] = self.stdout.rstrip("\n")
        return True

    def cmd_sleep(self, args):
        time.sleep(min(int(args[0]), self.sleep_cap))
        return True

    def cmd_defer(self, args):
        self.deferred.append(args)
        return True

    def cmd_replace(self, args):
        with open(self.path(args[0])) as f:
            text = f.read()
        for pair in args[1:]:
            key, _, value = pair.partition("=")
            text = text.replace("$" + key, value)
        with open(self.path(args[0]), "w") as f:
            f.write(text)
        return True


def script_env(srv, token, work, gh_dir, name):
    """What gh's harness sets, and what `connect gh --mode localhost` sets for gh and git (gh's host is
    github.localhost, reached through the server as gh's proxy, so a clone's remote names it)."""
    exports = subprocess.run([sys.executable, "-m", "agentgit", "connect", "gh", "--mode", "localhost",
                              "--url", srv.url, "--token", token, "--dir", gh_dir],
                             capture_output=True, text=True, check=True, env=dict(
                                 os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "..", "src"))).stdout
    env = dict(os.environ)
    for line in exports.splitlines():
        key, _, value = line[len("export "):].partition("=")
        env[key] = shlex.split(value.replace('"$PATH"', shlex.quote(env["PATH"])))[0] if value else ""
    for config in ("config.yml", "hosts.yml"):     # gh's harness makes the work directory gh's configuration
        shutil.copy(os.path.join(gh_dir, config), os.path.join(work, config))
    env.update(WORK=work, HOME=work, GH_CONFIG_DIR=work, GH_TOKEN=token, ORG=ORG, SCRIPT_NAME=name.replace("-", "_"),
               RANDOM_STRING="".join(random.choice(string.ascii_letters) for _ in range(10)), GH_PROMPT_DISABLED="1",
               GIT_AUTHOR_NAME="acceptance", GIT_AUTHOR_EMAIL="acceptance@example.com",
               GIT_COMMITTER_NAME="acceptance", GIT_COMMITTER_EMAIL="acceptance@example.com", NO_COLOR="1")
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="+")
    parser.add_argument("--sleep", type=int, default=3, help="the longest sleep a script gets, in seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work directories (their path is printed)")
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="agentgit-acceptance-")
    srv = agentgit.make_server(os.path.join(top, "data"), port=0, workflow_runner=agentgit.find_act()).start()
    failed = 0
    try:
        token = srv.add_user("acceptor")
        made = urllib.request.urlopen(urllib.request.Request(srv.url + "/api/ext/v1/user/orgs", method="POST", data=(
            '{"login": "%s"}' % ORG).encode(), headers={"Authorization": "token " + token}))
        assert made.status == 201, "the organization the scripts work in could not be made"
        for path in args.scripts:
            name = os.path.basename(path).rsplit(".", 1)[0]
            work = os.path.join(top, name)
            os.makedirs(work)
            started = time.monotonic()
            try:
                Script(path, script_env(srv, token, work, os.path.join(top, "gh-" + name), name), args.sleep).run()
                print("PASS %s (%.0f s)" % (name, time.monotonic() - started), flush=True)
            except (ScriptFailed, subprocess.TimeoutExpired) as failure:
                failed += 1
                print("FAIL %s (%.0f s)\n%s" % (name, time.monotonic() - started, failure), flush=True)
    finally:
        srv.stop()
        if args.keep:
            print("work directories in", top)
        else:
            shutil.rmtree(top, ignore_errors=True)
    print("%d of %d passed" % (len(args.scripts) - failed, len(args.scripts)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
