#!/usr/bin/env python3
"""agentgit benchmarks (`make bench`): every figure is printed next to a baseline measured in the same run.

  a. cold start: `agentgit.py serve` to the first 200, vs a bare ThreadingHTTPServer script.
  b. Git on a generated repository (~3,000 commits, ~2,000 files): full and shallow bare clones,
     50-commit fetch and 50-commit push through agentgit (each engine) vs local git
     (`git clone --no-local`, fetch from and push to a bare repository on disk); eight concurrent
     clones with wall time and the server's peak memory (process tree RSS).
  c. REST: GET /api/v3/repos/{o}/{r} with a token, requests per second vs a bare ThreadingHTTPServer
     that returns the same bytes.
  d. decide() for a task token with 10,000 grants stored, per call, vs the same rules in pycasbin and
     cedarpy (installed by `make bench` for this only).
  e. MCP: tools/call list_branches vs the REST call it makes.
  f. the broker: a call through /api/ext/v1/broker/proxy with a tool token vs the same call made
     directly to the same loopback upstream (a bare http.server).
  g. sender constraints: what checking a certificate-bound token (RFC 8705) and a DPoP proof (RFC
     9449, ES256 verified by each crypto backend: the standard library's Python, and cryptography's
     OpenSSL) adds to a request, per check.
  h. a fleet: 200 agents on one host, each cloning its repository and pushing five commits, all at
     once: errors (target 0), wall time vs the same work on local bare repositories, the server's peak RSS.
  i. the database: c.'s read and write with agentgit on PostgreSQL (a throw-away local cluster) vs on SQLite.
  j. workers: c.'s read with `serve --workers 2` vs one worker (driven by wrk), and h. with two workers.
  k. path rules: b.'s 50-commit push by a task token whose grant has path rules (every commit's paths
     judged before the ref moves) vs the same push by a task token of a grant without them.

Options: --commits N --files N (repository size), --trials N, --skip-dulwich, --agents N, --only NAME.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "bench", "work")
AGENTGIT = os.path.join(ROOT, "agentgit.py")
GIT_ENV = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@x",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@x", GIT_CONFIG_NOSYSTEM="1", HOME=WORK)

# The baseline gets the same TCP_NODELAY that agentgit sets, so the ratio measures the work, not Nagle.
BARE_SERVER = r'''
import http.server, socket, sys
body = open(sys.argv[1], "rb").read()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.do_GET()
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print("agentgit listening on http://127.0.0.1:%d" % srv.server_address[1], flush=True)
srv.serve_forever()
'''


def git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True).stdout


def timed(fn, trials, setup=None):
    """Median seconds of fn() over ``trials`` runs; setup() runs before each, outside the clock."""
    times = []
    for _ in range(trials):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    return path


# -- the generated repository -----------------------------------------------------------------------

def generate_repository(path, commits, files):
    """A bare repository built with git fast-import: one commit with ``files`` files, then commits that
    each change a few of them. Cached in bench/work between runs."""
    marker = os.path.join(path, "agentgit-bench-%d-%d" % (commits, files))
    if os.path.exists(marker):
        return
    fresh(path)
    git("init", "-q", "--bare", "-b", "main", path)
    rng = random.Random(7)
    words = ["agent", "token", "policy", "grant", "audit", "branch", "merge", "commit", "review", "task",
             "delegate", "scope", "resource", "runtime", "revoke", "approve"]

    def text(n):
        return "\n".join(" ".join(rng.choice(words) for _ in range(12)) + " %d" % rng.randrange(10 ** 9)
                         for _ in range(n)) + "\n"
    names = ["src/mod%03d/file%04d.py" % (i % 100, i) for i in range(files)]
    proc = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=path, stdin=subprocess.PIPE, env=GIT_ENV)

    def emit(data):
        proc.stdin.write(data if isinstance(data, bytes) else data.encode())

    stamp = 1700000000
    for n in range(commits):
        changes = names if n == 0 else rng.sample(names, 3)
        message = "commit %d" % n
        emit("commit refs/heads/main\ncommitter bench <b@x> %d +0000\ndata %d\n%s\n" % (stamp + n * 60, len(message),
                                                                                       message))
        for name in changes:
            blob = text(40 if n == 0 else 60).encode()
            emit("M 100644 inline %s\ndata %d\n" % (name, len(blob)))
            emit(blob + b"\n")
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    git("repack", "-adq", cwd=path)
    open(marker, "w").close()


# -- servers --------------------------------------------------------------------------------------

class ServerProcess:
    """A server in its own process (so the client's GIL does not slow it), with RSS sampling."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = self.proc.stdout.readline().strip()
        self.url = first.split()[-1]
        self.peak_kb = 0
        self.sampling = False

    def tree_rss_kb(self):
        pids, total = [self.proc.pid], 0
        children = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/stat" % entry) as f:
                        parent = int(f.read().rsplit(")", 1)[1].split()[1])
                    children.setdefault(parent, []).append(int(entry))
                except (OSError, IndexError, ValueError):
                    pass
        while pids:
            pid = pids.pop()
            pids += children.get(pid, [])
            try:
                with open("/proc/%d/status" % pid) as f:
                    total += int(next(line for line in f if line.startswith("VmRSS:")).split()[1])
            except (OSError, StopIteration):
                pass
        return total

    def sample(self):
        self.sampling, self.peak_kb = True, 0

        def loop():
            while self.sampling:
                self.peak_kb = max(self.peak_kb, self.tree_rss_kb())
                time.sleep(0.05)
        self.sampler = threading.Thread(target=loop, daemon=True)
        self.sampler.start()

    def stop_sampling(self):
        self.sampling = False
        self.sampler.join()
        return self.peak_kb

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def start_agentgit(data, engine="auto", database="", workers=1):
    return ServerProcess([sys.executable, AGENTGIT, "serve", "--port", "0", "--quiet", "--data", data,
                          "--git-engine", engine, "--database", database, "--workers", str(workers)])


def add_bench_user(data, database=""):
    """The human bench, with the CLI, on data a server made (the CLI never makes a data directory)."""
    start_agentgit(data, database=database).stop()
    return subprocess.run([sys.executable, AGENTGIT, "user", "add", "bench", "--data", data, "--database", database],
                          capture_output=True, text=True, check=True).stdout.strip().split("\n")[-1]


def request(url, path, token=None, method="GET", body=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Authorization": "token " + token, "Content-Type": "application/json"} if token else {}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def first_200(argv, path, env=None):
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)
    url = proc.stdout.readline().strip().split()[-1]
    status = request(url, path)[0]
    elapsed = time.perf_counter() - start
    proc.terminate()
    proc.wait()
    assert status == 200, status
    return elapsed


# -- a. cold start --------------------------------------------------------------------------------

def bench_cold_start(trials):
    """From process start to the first 200, with a fresh data dir each time. A script's bytecode is
    never cached, so `python agentgit.py` (what `make serve` runs) compiles the whole file at every
    start; `python -m agentgit` reuses the single file's cached bytecode, and the package (src/agentgit/,
    what `make test-package` imports) its modules' cached bytecode, as Python does by default."""
    body = os.path.join(WORK, "bare-body.json")
    with open(body, "w") as f:
        f.write("{}")
    bare = statistics.median(first_200([sys.executable, "-c", BARE_SERVER, body], "/") for _ in range(trials))
    cached_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    package_env = dict(cached_env, PYTHONPATH=os.path.join(ROOT, "src"))
    package = [sys.executable, "-P", "-m", "agentgit"]
    subprocess.run([sys.executable, "-m", "agentgit", "--help"], cwd=ROOT, env=cached_env, capture_output=True)
    subprocess.run(package + ["--help"], cwd=ROOT, env=package_env, capture_output=True)
    for label, argv, env in (("python agentgit.py serve", [sys.executable, AGENTGIT], None),
                             ("python -m agentgit serve", [sys.executable, "-m", "agentgit"], cached_env),
                             ("the package, src/agentgit", package, package_env)):
        times = []
        for _ in range(trials):
            data = fresh(os.path.join(WORK, "cold-data"))
            times.append(first_200(argv + ["serve", "--port", "0", "--quiet", "--data", data], "/api/v3", env))
        ours = statistics.median(times)
        print("a. cold start to first 200 (%s)  %.3f s   bare http.server %.3f s   ratio %.2fx   (target < 0.3 s)"
              % (label, ours, bare, ours / bare))


# -- b. git -----------------------------------------------------------------------------------------

def prepare_agentgit_repo(data, source):
    """A data dir whose user bench owns bench/big, a copy of ``source``. Returns (token, repo dir)."""
    fresh(data)
    token = add_bench_user(data)
    server = start_agentgit(data)
    status, body = request(server.url, "/api/v3/user/repos", token, "POST", {"name": "big", "private": True})
    server.stop()
    assert status == 201, body
    repo_dir = os.path.join(data, "repos", "%d.git" % json.loads(body)["id"])
    shutil.rmtree(repo_dir)
    git("clone", "-q", "--bare", "--no-local", source, repo_dir)
    return token, repo_dir


def bench_git(args):
    source = os.path.join(WORK, "source.git")
    generate_repository(source, args.commits, args.files)
    size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(source) for f in fs) / 1e6
    head = git("rev-parse", "main", cwd=source).strip()
    base_sha = git("rev-parse", "main~50", cwd=source).strip()
    print("b. repository: %d commits, %d files, %.1f MB packed" % (args.commits, args.files, size_mb))
    # a clone that lacks the last 50 commits, for the fetch; a bare repo at main~50, for the push baseline
    old = fresh(os.path.join(WORK, "old.git"))
    git("clone", "-q", "--bare", "--no-local", source, old)
    git("update-ref", "refs/heads/main", base_sha, cwd=old)
    behind = fresh(os.path.join(WORK, "behind"))
    git("clone", "-q", "--no-local", old, behind)
    ahead = fresh(os.path.join(WORK, "ahead"))
    git("clone", "-q", "--no-local", source, ahead)
    trials = args.trials
    dst = os.path.join(WORK, "dst")

    # --bare on both sides: checking out 2,000 files costs more, and varies more, than the transfer.
    def clone(url, *extra):
        return lambda: git("clone", "-q", "--bare", *extra, url, dst)

    def empty_dst():
        fresh(dst)

    def copy_behind():
        fresh(dst)
        shutil.copytree(behind, dst, symlinks=True)

    def fetch(url):
        def run():
            git("fetch", "-q", url, "main", cwd=dst)
            assert git("rev-parse", "FETCH_HEAD", cwd=dst).strip() == head
        return run

    def push(url, reset_dir):
        def run():
            git("update-ref", "refs/heads/main", base_sha, cwd=reset_dir)
            git("push", "-q", url, "main:main", cwd=ahead)
        return run

    baseline_bare = fresh(os.path.join(WORK, "push-target.git"))
    git("clone", "-q", "--bare", "--no-local", source, baseline_bare)
    local = {
        "full clone": timed(clone(source, "--no-local"), trials, empty_dst),
        "shallow clone": timed(clone("file://" + source, "--depth", "1"), trials, empty_dst),
        "50-commit fetch": timed(fetch(source), trials, copy_behind),
        "50-commit push": timed(push(baseline_bare, baseline_bare), trials),
    }
    print("   local git baseline: " + ", ".join("%s %.3f s" % kv for kv in local.items()))
    engines = ["git"] + ([] if args.skip_dulwich else ["dulwich"])
    for engine in engines:
        data = os.path.join(WORK, "data-" + engine)
        token, repo_dir = prepare_agentgit_repo(data, source)
        server = start_agentgit(data, engine)
        u = urllib.parse.urlsplit(server.url)
        url = "http://x:%s@%s:%d/bench/big.git" % (token, u.hostname, u.port)
        n = trials if engine == "git" else 1
        try:
            ours = {
                "full clone": timed(clone(url), n, empty_dst),
                "shallow clone": timed(clone(url, "--depth", "1"), n, empty_dst),
                "50-commit fetch": timed(fetch(url), n, copy_behind),
                "50-commit push": timed(push(url, repo_dir), n),
            }
            target = {"full clone": 1.2, "shallow clone": None, "50-commit fetch": 2.0, "50-commit push": 2.0}
            for name, seconds in ours.items():
                goal = " (target <= %.1fx)" % target[name] if engine == "git" and target[name] else ""
                print("   %-8s %-16s %7.3f s   vs local %7.3f s   ratio %5.2fx%s" % (
                    engine, name, seconds, local[name], seconds / local[name], goal))
            if engine == "git" or args.dulwich_concurrent:
                server.sample()
                start = time.perf_counter()
                errors = []

                def one(i):
                    target_dir = fresh(os.path.join(WORK, "concurrent%d" % i))
                    try:
                        git("clone", "-q", url, target_dir)
                    except subprocess.CalledProcessError as e:
                        errors.append(e.stderr)
                threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - start
                peak = server.stop_sampling()
                print("   %-8s 8 concurrent clones: %.2f s wall, server peak RSS %.0f MB (process tree)%s" % (
                    engine, wall, peak / 1024, "; %d failed" % len(errors) if errors else ""))
        finally:
            server.stop()


# -- h. a fleet of agents on one host --------------------------------------------------------------

def fleet_work(remote, workdir, agent):
    """One agent's work: clone its repository, then five commits, each pushed. Returns an error or None."""
    try:
        git("clone", "-q", remote, workdir)
        for n in range(5):
            with open(os.path.join(workdir, "work.txt"), "a") as f:
                f.write("%s commit %d\n" % (agent, n))
            git("add", "work.txt", cwd=workdir)
            git("commit", "-qm", "commit %d" % n, cwd=workdir)
            git("push", "-q", "origin", "HEAD:main", cwd=workdir)
        return None
    except subprocess.CalledProcessError as e:
        return (e.stderr or "").strip().splitlines()[-1:] or ["exit %d" % e.returncode]


def run_fleet(remotes, label):
    """Every agent's work at once, each in its own thread (and git processes); (wall seconds, errors)."""
    errors, start = [], time.perf_counter()

    def one(i, remote):
        failed = fleet_work(remote, fresh(os.path.join(WORK, "fleet", label, str(i))), "agent%d" % i)
        if failed:
            errors.append(failed)
    threads = [threading.Thread(target=one, args=(i, r)) for i, r in enumerate(remotes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, errors


def bench_fleet(agents=200, workers=1):
    """``agents`` agents registered on one server, all on 127.0.0.1, each cloning its own repository
    and pushing five commits (one push each), all at once; vs the same work on local bare repositories
    (`git clone --no-local` and pushes to a path). Errors must be 0; the server's peak RSS is printed."""
    data = fresh(os.path.join(WORK, "data-fleet"))
    server = start_agentgit(data, workers=workers)
    try:
        token_file = os.path.join(data, "first-admin-token")     # written just after the first line
        for _ in range(100):
            if os.path.exists(token_file):
                break
            time.sleep(0.05)
        with open(token_file) as f:
            admin = f.read().strip()
        u = urllib.parse.urlsplit(server.url)
        remotes = []
        for i in range(agents):     # the site admin registers them: past the anonymous limit per address
            status, body = request(server.url, "/api/ext/v1/agents", admin, "POST", {"prefix_login": "fleet"})
            assert status == 201, (status, body)
            made = json.loads(body)
            remotes.append("http://x:%s@%s:%d/%s.git" % (made["token"], u.hostname, u.port, made["repo_full_name"]))
        local = []
        for i in range(agents):
            bare = fresh(os.path.join(WORK, "fleet-local", "%d.git" % i))
            git("init", "-q", "--bare", "-b", "main", bare)
            seed = fresh(os.path.join(WORK, "fleet-seed"))
            git("init", "-q", "-b", "main", seed)
            git("commit", "-q", "--allow-empty", "-m", "init", cwd=seed)
            git("push", "-q", bare, "main", cwd=seed)
            local.append(bare)
        local_wall, local_errors = run_fleet(local, "local")
        server.sample()
        wall, errors = run_fleet(remotes, "agentgit")
        peak = server.stop_sampling()
        print("h. fleet: %d agents on one host, each a clone and five pushes, all at once%s" % (
            agents, "; serve --workers %d" % workers if workers > 1 else ""))
        print("   agentgit %.1f s wall, %d errors (target 0), server peak RSS %.0f MB (process tree)" % (
            wall, len(errors), peak / 1024))
        print("   local git %.1f s wall (%d errors)   ratio %.2fx" % (local_wall, len(local_errors), wall / local_wall))
        for error in sorted(set(" ".join(e) for e in errors))[:5]:
            print("   error: %s" % error)
    finally:
        server.stop()


# -- c. REST --------------------------------------------------------------------------------------

def requests_per_second(url, path, token, threads=4, per_thread=500, method="GET", body=None, extra=None):
    """Requests a second from ``threads`` keep-alive clients, each sending ``per_thread`` requests."""
    u = urllib.parse.urlsplit(url)
    headers = dict({"Authorization": "token " + token} if token else {}, **(extra or {}))
    done = []

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        for _ in range(per_thread):
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status in (200, 201), resp.status
        conn.close()
        done.append(per_thread)
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done) / (time.perf_counter() - start)


REST_READ, REST_WRITE = "/api/v3/repos/bench/demo", "/api/v3/repos/bench/demo/issues/1/comments"
COMMENT = json.dumps({"body": "a comment of a benchmark"})


def rest_server(name, database=""):
    """(agentgit serving bench/demo with an issue, bench's token), on SQLite or on ``database``."""
    data = fresh(os.path.join(WORK, name))
    token = add_bench_user(data, database)
    server = start_agentgit(data, database=database)
    status, body = request(server.url, "/api/v3/user/repos", token, "POST", {"name": "demo", "auto_init": True})
    assert status == 201
    assert request(server.url, "/api/v3/repos/bench/demo/issues", token, "POST", {"title": "bench"})[0] == 201
    return server, token


def rest_round(figures, url, token):
    """One round of the read and the write against ``url`` (token None: the bare server, at /)."""
    figures["read"].append(requests_per_second(url, REST_READ if token else "/", token, per_thread=1000))
    figures["write"].append(requests_per_second(url, REST_WRITE if token else "/", token, per_thread=100, method="POST",
                                                body=COMMENT, extra={"Content-Type": "application/json"}))


def bench_rest(rounds=7):
    """Both servers run side by side and are measured in alternating rounds; medians are printed,
    since a 2-core machine shared by client and server threads is noisy from one round to the next.
    The read: GET /repos/{o}/{r} with a token. The write: POST an issue comment (a row, its audit row,
    a commit), against a bare server that reads the same body and answers the same bytes."""
    server, token = rest_server("rest-data")
    bare = None
    try:
        body_file = os.path.join(WORK, "rest-body.json")
        with open(body_file, "wb") as f:
            f.write(request(server.url, REST_READ, token)[1])
        bare = ServerProcess([sys.executable, "-c", BARE_SERVER, body_file])
        ours, theirs = {"read": [], "write": []}, {"read": [], "write": []}
        for _ in range(rounds):
            rest_round(ours, server.url, token)
            rest_round(theirs, bare.url, None)
        figures = {name: (ours[name], theirs[name]) for name in ours}
    finally:
        server.stop()
        if bare:
            bare.stop()
    for name, label, target in (("read", "GET /repos/{o}/{r}         ", 0.75), ("write", "POST .../issues/1/comments", 0.7)):
        ours, theirs = (statistics.median(f) for f in figures[name])
        print("c. REST %s agentgit %5.0f req/s   bare http.server %5.0f req/s   ratio %.2fx   (target >= %.2fx; "
              "medians of %d alternating rounds)" % (label, ours, theirs, ours / theirs, target, rounds))


def wrk_requests_per_second(url, path, token, seconds=8):
    """Requests a second that wrk (a C load generator: the client takes little of the cores) gets from
    ``url`` over 8 keep-alive connections."""
    out = subprocess.run(["wrk", "-t1", "-c8", "-d%ds" % seconds, "-H", "Authorization: token " + token, url + path],
                         capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in out and "Socket errors" not in out, out
    return float(out.split("Requests/sec:")[1].split()[0])


def bench_workers(agents, rounds=3):
    """c.'s read with `serve --workers 2` against one worker, side by side in alternating rounds, driven
    by wrk; then h.'s fleet with two workers."""
    if shutil.which("wrk") is None:
        print("j. workers: skipped, wrk is not installed (apt-get install wrk; make bench does as root)")
        return
    servers = []
    try:
        for workers in (1, 2):
            data = fresh(os.path.join(WORK, "workers-%d" % workers))
            token = add_bench_user(data)
            servers.append((start_agentgit(data, workers=workers), token))
            assert request(servers[-1][0].url, "/api/v3/user/repos", token, "POST",
                           {"name": "demo", "auto_init": True})[0] == 201
        figures = ([], [])
        for _ in range(rounds):
            for (server, token), figure in zip(servers, figures):
                figure.append(wrk_requests_per_second(server.url, REST_READ, token))
    finally:
        for server, _ in servers:
            server.stop()
    one, two = (statistics.median(f) for f in figures)
    print("j. REST GET /repos/{o}/{r} with 2 workers %5.0f req/s   1 worker %5.0f req/s   ratio %.2fx   (target >= "
          "1.6x; wrk, medians of %d alternating rounds)" % (two, one, two / one, rounds))
    bench_fleet(agents, workers=2)


def bench_database(rounds=5):
    """The REST read and write of c., agentgit on PostgreSQL (a throw-away local cluster, pg8000) against
    agentgit on SQLite, side by side in alternating rounds."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from throwaway_postgres import Cluster
    cluster = Cluster()
    servers = []
    try:
        servers = [rest_server("sqlite-data"), rest_server("postgresql-data", cluster.new_database())]
        figures = ({"read": [], "write": []}, {"read": [], "write": []})
        for _ in range(rounds):
            for (server, token), figure in zip(servers, figures):
                rest_round(figure, server.url, token)
    finally:
        for server, _ in servers:
            server.stop()
        cluster.stop()
    for name, label in (("read", "GET /repos/{o}/{r}         "), ("write", "POST .../issues/1/comments")):
        sqlite, postgresql = (statistics.median(f[name]) for f in figures)
        print("i. REST %s on PostgreSQL %5.0f req/s   on SQLite %5.0f req/s   ratio %.2fx   (medians of %d "
              "alternating rounds)" % (label, postgresql, sqlite, postgresql / sqlite, rounds))


# -- e. MCP: a read tool against the same read over REST -------------------------------------------

def bench_mcp(rounds=5):
    """tools/call list_branches on /mcp (2026-07-28, headers and _meta as the SDK sends them) against
    GET /repos/{o}/{r}/branches, the REST call the tool makes, in alternating rounds on one server."""
    data = fresh(os.path.join(WORK, "mcp-data"))
    token = add_bench_user(data)
    server = start_agentgit(data)
    try:
        assert request(server.url, "/api/v3/user/repos", token, "POST", {"name": "demo", "auto_init": True})[0] == 201
        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
        call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "_meta": meta, "name": "list_branches", "arguments": {"owner": "bench", "repo": "demo"}}}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "list_branches"}
        mcp, rest = [], []
        for _ in range(rounds):
            mcp.append(requests_per_second(server.url, "/mcp", token, method="POST", body=call, extra=headers))
            rest.append(requests_per_second(server.url, "/api/v3/repos/bench/demo/branches", token))
    finally:
        server.stop()
    mcp, rest = statistics.median(mcp), statistics.median(rest)
    print("e. MCP tools/call list_branches  %.0f calls/s   REST GET .../branches %.0f req/s   cost %.2fx   "
          "(target <= 1.5x; medians of %d alternating rounds)" % (mcp, rest, rest / mcp, rounds))


# -- f. the broker: a proxied call against the same call made directly -----------------------------

def bound_agent(url, human):
    """An agent registered as anyone may register one, bound to ``human`` by her invite; returns its
    registration (login, token)."""
    agent = json.loads(request(url, "/api/ext/v1/agents", None, "POST", {"prefix_login": "bench"})[1])
    status, body = request(url, "/api/ext/v1/agent-invites", human, "POST", {"repo_grants": []})
    assert status == 201, body
    invite = json.loads(body)["invite_token"]
    assert request(url, "/api/ext/v1/agent-bindings/confirm", agent["token"], "POST", {"invite_token": invite})[0] == 201
    return agent


def bench_broker(rounds=5):
    data = fresh(os.path.join(WORK, "broker-data"))
    human = add_bench_user(data)
    server = ServerProcess([sys.executable, AGENTGIT, "serve", "--port", "0", "--quiet", "--data", data,
                            "--broker-allow-loopback"])
    body_file = os.path.join(WORK, "broker-body.json")
    with open(body_file, "w") as f:
        json.dump({"key": "PAY-1", "fields": {"summary": "x" * 1500}}, f)
    upstream = ServerProcess([sys.executable, "-c", BARE_SERVER, body_file])
    try:
        assert request(server.url, "/api/v3/user/repos", human, "POST", {"name": "demo"})[0] == 201
        status, made = request(server.url, "/api/ext/v1/broker/credentials", human, "POST", {
            "name": "jira", "kind": "api_key", "header": "X-Api-Key", "value": "bench-secret-value",
            "base_url": upstream.url})
        assert status == 201, made
        agent = bound_agent(server.url, human)
        status, grant = request(server.url, "/api/ext/v1/task-grants", human, "POST", {
            "agent": "agent:" + agent["login"], "task": "task:bench", "resources": ["credential:bench/jira"],
            "actions": ["call_api"], "constraints": {"network_allowlist": [
                "http://" + urllib.parse.urlsplit(upstream.url).netloc]}})
        assert status == 201, grant
        task = json.loads(request(server.url, "/api/ext/v1/task-grants/%s/tokens" % json.loads(grant)["id"],
                                  agent["token"], "POST", {})[1])["token"]
        status, tool = request(server.url, "/api/ext/v1/broker/tokens", task, "POST", {"credential": "credential:bench/jira"})
        assert status == 201, tool
        tool = json.loads(tool)
        path = urllib.parse.urlsplit(tool["proxy_url"]).path + "/rest/api/2/issue/PAY-1"
        proxied, direct = [], []
        for _ in range(rounds):
            proxied.append(requests_per_second(server.url, path, tool["token"], per_thread=200))
            direct.append(requests_per_second(upstream.url, "/rest/api/2/issue/PAY-1", None, per_thread=200,
                                              extra={"X-Api-Key": "bench-secret-value"}))
    finally:
        server.stop()
        upstream.stop()
    proxied, direct = statistics.median(proxied), statistics.median(direct)
    print("f. broker proxied GET            %.0f calls/s   direct to the upstream %.0f calls/s   cost %.2fx   "
          "(target <= 1.3x; medians of %d alternating rounds)" % (proxied, direct, direct / proxied, rounds))


# -- g. sender constraints: the cost of each check ----------------------------------------------------

def bench_proofs(calls=2000):
    """check_presented() for a request bearing a certificate-bound token and one bearing a DPoP-bound
    token with a fresh proof, against the same call for an unbound bearer token (the baseline)."""
    sys.path.insert(0, ROOT)
    import agentgit
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    class App:
        key, dpop_replay, config = b"k" * 32, agentgit.ReplayCache(), agentgit.Config(data_dir="")
        failed_proofs = agentgit.RateLimiter(None, "failed_proofs", 0, 60)
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": agentgit.b64url(numbers.x.to_bytes(32, "big")),
           "y": agentgit.b64url(numbers.y.to_bytes(32, "big"))}
    url, token = "https://agentgit.test/api/v3/user", "agt_" + "0" * 48
    ath = agentgit.b64url(__import__("hashlib").sha256(token.encode()).digest())

    def proof(i):
        head = agentgit.b64url(json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}).encode())
        claims = agentgit.b64url(json.dumps({"htm": "GET", "htu": url, "iat": int(time.time()), "jti": "bench-jti-%d" % i,
                                             "ath": ath}).encode())
        r, s = decode_dss_signature(key.sign(("%s.%s" % (head, claims)).encode(), ec.ECDSA(hashes.SHA256())))
        return "%s.%s.%s" % (head, claims, agentgit.b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big")))
    proofs = [proof(i) for i in range(calls)]
    thumbprint = agentgit.jwk_thumbprint(jwk)
    certificate = agentgit.certificate_thumbprint(b"a certificate's DER bytes")

    def check(presented, scheme, cnf):
        agentgit.check_presented(App, agentgit.Principal(runtime="127.0.0.1"), presented, scheme, token, cnf)
    plain = agentgit.Presented("GET", url)
    check(agentgit.Presented("GET", url, dpop=proof(-1)), "dpop", {"jkt": thumbprint})   # the key's tables, once
    bare = per_call(lambda: check(plain, "bearer", None), calls)
    bound = per_call(lambda: check(agentgit.Presented("GET", url, certificate, "spiffe://example.org/ci"), "bearer",
                                   {"x5t#S256": certificate}), calls)
    dpop = {}
    for backend in ("stdlib", "cryptography"):          # the one namespace of the single file: its verifiers
        agentgit.BACKEND = agentgit.choose_backend(backend)
        check(agentgit.Presented("GET", url, dpop=proof(-2 - len(dpop))), "dpop", {"jkt": thumbprint})   # warm
        shown = iter(proofs[len(dpop) * (calls // 2):])
        dpop[backend] = per_call(lambda: check(agentgit.Presented("GET", url, dpop=next(shown)), "dpop",
                                               {"jkt": thumbprint}), calls // 2)
    print("g. sender constraints            mTLS-bound token +%.1f us   DPoP proof +%.0f us (stdlib), +%.0f us "
          "(cryptography)   (unbound %.1f us; target <= 200 us each)" % (
              (bound - bare) * 1e6, (dpop["stdlib"] - bare) * 1e6, (dpop["cryptography"] - bare) * 1e6, bare * 1e6))
    bench_attacker_costs(agentgit, ec, hashes, decode_dss_signature, url)


def bench_attacker_costs(agentgit, ec, hashes, decode_dss_signature, url, keys=20):
    """What an attacker's request costs the server in CPU, per backend: a DPoP proof by a key never seen
    before (a fresh key per proof), and a client assertion refused for its signature (a 4096-bit key)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    proofs = []
    for i in range(keys):
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": agentgit.b64url(numbers.x.to_bytes(32, "big")),
               "y": agentgit.b64url(numbers.y.to_bytes(32, "big"))}
        head = agentgit.b64url(json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}).encode())
        claims = agentgit.b64url(json.dumps({"htm": "GET", "htu": url, "iat": int(time.time()),
                                             "jti": "fresh-key-%d" % i}).encode())
        r, s = decode_dss_signature(key.sign(("%s.%s" % (head, claims)).encode(), ec.ECDSA(hashes.SHA256())))
        proofs.append("%s.%s.%s" % (head, claims, agentgit.b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=4096).public_key().public_numbers()
    figures = []
    for backend in ("stdlib", "cryptography"):
        agentgit.BACKEND = agentgit.choose_backend(backend)
        agentgit.es256_valid(*agentgit.ec_public_key(json.loads(agentgit.b64url_decode(proofs[0].split(".")[0]))["jwk"]),
                             b"warm", b"\x01" * 64)        # the base point's table, once per process
        start = time.perf_counter()
        for proof in proofs:
            agentgit.check_dpop_proof(proof, "GET", url, b"k" * 32, agentgit.ReplayCache())
        fresh = (time.perf_counter() - start) / keys
        bad = per_call(lambda: agentgit.rs256_valid(rsa_key.n, rsa_key.e, b"claims", b"\x01" * 512), 200)
        figures.append("%s: first-seen DPoP key %.2f ms, rejected assertion %.0f us" % (backend, fresh * 1e3, bad * 1e6))
    print("   an attacker's requests          " + ";  ".join(figures) + "   (a key's table, once: ~80 ms stdlib)")


# -- d. the policy decision point ------------------------------------------------------------------

CASBIN_MODEL = """
[request_definition]
r = sub, obj, act, ref
[policy_definition]
p = sub, obj, act, ref
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = r.sub == p.sub && r.obj == p.obj && r.act == p.act && keyMatch(r.ref, p.ref)
"""
CEDAR_POLICY = ('permit(principal == Task::"%s", action == Action::"%s", resource == Repo::"%s") '
                'when { context.ref like "refs/heads/agent/%s/*" };')
TASK_ACTIONS = ("read_code", "create_branch", "push_branch", "open_pr")


def per_call(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def bench_decide(grants=10000, calls=20000):
    """The same question -- may this task push refs/heads/agent/task-0/x to alice/payments? -- with
    `grants` grants stored, asked of agentgit's decide() (a real task token's principal, the warm
    read cache a running server has between writes) and of the same rules in pycasbin and cedarpy."""
    sys.path.insert(0, ROOT)
    import agentgit
    server = agentgit.make_server(fresh(os.path.join(WORK, "decide-data"))).start()
    try:
        alice = server.add_user("alice")
        request(server.url, "/api/v3/user/repos", alice, "POST", {"name": "payments", "private": True,
                                                                   "auto_init": True})
        login, agent, _ = server.add_agent("coder")
        # bound with no standing access: the task token carries alice's authority, computed live
        invite = json.loads(request(server.url, "/api/ext/v1/agent-invites", alice, "POST", {})[1])["invite_token"]
        request(server.url, "/api/ext/v1/agent-bindings/confirm", agent, "POST", {"invite_token": invite})
        # (with path rules: decide() with every rule of issue 29 in force, the site's default guardrails too)
        status, body = request(server.url, "/api/ext/v1/task-grants", alice, "POST", {
            "agent": "agent:" + login, "task": "task:task-0", "resources": ["repo:alice/payments"],
            "actions": list(TASK_ACTIONS), "constraints": {"branch_prefix": "agent/task-0/", "paths": ["src/**"]}})
        assert status == 201, body
        grant = json.loads(body)
        task_token = json.loads(request(server.url, "/api/ext/v1/task-grants/%s/tokens" % grant["id"], agent,
                                        "POST", {})[1])["token"]
        store = server.app.store
        with store.transaction() as db:      # the other grants, as the API stores them
            row = db.execute("SELECT * FROM task_grants").fetchone()
            for i in range(1, grants):
                db.execute("INSERT INTO task_grants (public_id, agent_id, delegator_id, task, resources, actions,"
                           " constraints, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           ("tg_bench%06d" % i, row["agent_id"], row["delegator_id"], "task:task-%d" % i,
                            json.dumps(["repo:alice/r%d" % i]), row["actions"],
                            json.dumps({"branch_prefix": "agent/task-%d/" % i}), row["created_at"], row["expires_at"]))
        principal = agentgit.authenticate(server.app, {"Authorization": "token " + task_token}, "127.0.0.1")
        resource = agentgit.Resource.repo(agentgit.lookup_repo(store, "alice", "payments"))
        context = {"ref": "refs/heads/agent/task-0/x"}
        assert agentgit.decide(store, principal, "push_branch", resource, context).allowed
        assert not agentgit.decide(store, principal, "push_branch", resource, {"ref": "refs/heads/main"}).allowed
        ours = per_call(lambda: agentgit.decide(store, principal, "push_branch", resource, context), calls)
    finally:
        server.stop()
    # the earlier figure: 6-12 us per call (sessions 1 and 2), before the delegator's live permission and
    # the rule table joined the decision
    print("d. decide() for a task token, %d grants stored, with its delegator's live permission: %.1f us per call"
          " (target <= 20 us; 6-12 us before delegated authority)" % (grants, ours * 1e6))
    try:
        import casbin
        import cedarpy
    except ImportError:
        print("   (pycasbin and cedarpy are not installed: `make bench` installs them)")
        return
    enforcer = casbin.Enforcer(casbin.Enforcer.new_model(text=CASBIN_MODEL))
    enforcer.add_policies([["task-%d" % i, "alice/payments" if i == 0 else "alice/r%d" % i, action,
                            "refs/heads/agent/task-%d/*" % i] for i in range(grants) for action in TASK_ACTIONS])
    assert enforcer.enforce("task-0", "alice/payments", "push_branch", context["ref"])
    assert not enforcer.enforce("task-0", "alice/payments", "push_branch", "refs/heads/main")
    theirs = per_call(lambda: enforcer.enforce("task-0", "alice/payments", "push_branch", context["ref"]),
                      max(1, calls // 1000))
    print("   pycasbin, same rules (%d policy lines): %.1f us per call   agentgit is %.0fx faster" % (
        grants * len(TASK_ACTIONS), theirs * 1e6, theirs / ours))
    policies = "\n".join(CEDAR_POLICY % ("task-%d" % i, action, "alice/payments" if i == 0 else "alice/r%d" % i,
                                         "task-%d" % i) for i in range(grants) for action in TASK_ACTIONS)
    cedar_request = {"principal": 'Task::"task-0"', "action": 'Action::"push_branch"',
                     "resource": 'Repo::"alice/payments"', "context": context}
    policy_set = cedarpy.PolicySet.from_str(policies)   # parsed once, as a server would
    assert cedarpy.is_authorized(cedar_request, policy_set, []).allowed
    cedar = per_call(lambda: cedarpy.is_authorized(cedar_request, policy_set, []), max(1, calls // 100))
    print("   cedarpy, same rules (%d policies, parsed once): %.1f us per call   "
          "agentgit is %.0fx faster" % (grants * len(TASK_ACTIONS), cedar * 1e6, cedar / ours))


def bench_paths(args):
    """k. The same 50-commit push twice: under a grant whose path rules judge every commit (paths
    ["**"], so the push lands) and under one without path rules, each by its own task token."""
    source = os.path.join(WORK, "source.git")
    generate_repository(source, args.commits, args.files)
    base_sha = git("rev-parse", "main~50", cwd=source).strip()
    data = os.path.join(WORK, "data-paths")
    bench, repo_dir = prepare_agentgit_repo(data, source)
    agent = subprocess.run([sys.executable, AGENTGIT, "agent", "add", "coder", "--data", data], capture_output=True,
                           text=True, check=True).stdout.strip().split("\n")[-1]
    ahead = fresh(os.path.join(WORK, "ahead-paths"))
    git("clone", "-q", "--no-local", source, ahead)
    server = start_agentgit(data, "git")
    try:
        invite = json.loads(request(server.url, "/api/ext/v1/agent-invites", bench, "POST", {"repo_grants": [
            {"repo_full_name": "bench/big", "permission": "push"}]})[1])["invite_token"]
        login = json.loads(request(server.url, "/api/ext/v1/agent-bindings/confirm", agent, "POST",
                                   {"invite_token": invite})[1])["agent"]["login"]
        tokens = {}
        for name, constraints in (("with path rules", {"paths": ["**"]}), ("without", {})):
            status, body = request(server.url, "/api/ext/v1/task-grants", bench, "POST", {
                "agent": "agent:" + login, "task": "task:" + name.replace(" ", "-"), "resources": ["repo:bench/big"],
                "actions": ["read_code", "push_branch"], "constraints": constraints})
            assert status == 201, body
            tokens[name] = json.loads(request(server.url, "/api/ext/v1/task-grants/%s/tokens" % json.loads(body)["id"],
                                              agent, "POST", {})[1])["token"]
        u = urllib.parse.urlsplit(server.url)

        def push(token):
            def run():
                git("update-ref", "refs/heads/main", base_sha, cwd=repo_dir)
                git("push", "-q", "http://x:%s@%s:%d/bench/big.git" % (token, u.hostname, u.port), "main:main",
                    cwd=ahead)
            return run
        seconds = {name: timed(push(token), args.trials) for name, token in tokens.items()}
    finally:
        server.stop()
    print("k. 50-commit push judged path by path: %.3f s   vs without path rules %.3f s   ratio %.2fx" % (
        seconds["with path rules"], seconds["without"], seconds["with path rules"] / seconds["without"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--skip-dulwich", action="store_true")
    parser.add_argument("--dulwich-concurrent", action="store_true",
                        help="also run eight concurrent clones on dulwich (slow: minutes, GBs)")
    parser.add_argument("--agents", type=int, default=200, help="the fleet's size (h)")
    parser.add_argument("--only", choices=("decide", "cold-start", "rest", "mcp", "broker", "proofs", "git", "fleet",
                                           "database", "workers", "paths"),
                        help="run one benchmark")
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    for name, run in (("decide", bench_decide), ("cold-start", lambda: bench_cold_start(args.trials)),
                      ("rest", bench_rest), ("mcp", bench_mcp), ("broker", bench_broker), ("proofs", bench_proofs),
                      ("git", lambda: bench_git(args)), ("fleet", lambda: bench_fleet(args.agents)),
                      ("database", bench_database), ("workers", lambda: bench_workers(args.agents)),
                      ("paths", lambda: bench_paths(args))):
        if args.only in (None, name):
            run()


if __name__ == "__main__":
    main()
