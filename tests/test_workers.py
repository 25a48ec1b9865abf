"""More than one server process over the same data, as an operator starts them: `serve --workers N` (N
processes on one port), and two nodes (two servers on their own ports, one database and one data
directory standing in for a shared volume). Every worker answers; a worker killed mid-service is replaced
while the others keep answering; SIGTERM stops them all gracefully; work that must happen once (a webhook
delivery) happens once, also when the node that claimed it died; racing pushers, issues and merges
through both nodes land every commit under unique numbers; a node killed mid-push leaves nothing
half-written."""
import http.client
import os
import signal
import subprocess
import threading
import time
import urllib.parse

from conftest import CLI, api, commit_file, git, git_env, remote
from test_crash import assert_consistent
from test_webhooks import Receiver
import agentgit  # noqa: E402


class ServedAt:
    """What conftest's api() needs of a server: its URL (here, served by another process)."""
    def __init__(self, url):
        self.url = url


def children(pid):
    """The worker processes of the supervisor ``pid``."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return sorted(int(p) for p in found)


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def get(url, path, token):
    """One request on a connection of its own (so the kernel may hand each to another worker)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", path, headers={"Authorization": "token " + token})
    status = conn.getresponse().status
    conn.close()
    return status


def all_answered(url, token, count):
    try:
        return {get(url, "/api/v3/user", token) for _ in range(count)} == {200}
    except OSError:
        return False


def wait_for(predicate, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_workers_stop_themselves_when_their_supervisor_is_killed_outright(tmp_path):
    supervisor = subprocess.Popen([*CLI, "serve", "--workers", "2", "--port", "0", "--data", str(tmp_path / "data"),
                                   "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    supervisor.stdout.readline()
    assert wait_for(lambda: len(children(supervisor.pid)) == 2)
    workers = children(supervisor.pid)
    supervisor.kill()
    supervisor.wait()
    assert wait_for(lambda: not [pid for pid in workers if running(pid)], seconds=30)


def running(pid):
    """Is ``pid`` alive (not a zombie waiting to be reaped)?"""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_two_workers_share_the_port_are_replaced_when_killed_and_stop_together(tmp_path):
    data = tmp_path / "data"
    supervisor = subprocess.Popen([*CLI, "serve", "--workers", "2", "--port", "0", "--data", str(data), "--quiet",
                                   "--egress-allow-loopback"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    receiver = Receiver()
    try:
        url = supervisor.stdout.readline().split()[-1]
        said = [supervisor.stdout.readline() for _ in range(5)]    # the first worker's banner, and the supervisor's
        assert "agentgit: 2 workers on port %d (pids " % urllib.parse.urlsplit(url).port in "".join(said), said
        token = (data / "first-admin-token").read_text().strip()
        workers = children(supervisor.pid)
        assert len(workers) == 2
        before = {pid: cpu_ticks(pid) for pid in workers}
        assert {get(url, "/api/v3/user", token) for _ in range(300)} == {200}
        assert all(cpu_ticks(pid) > before[pid] for pid in workers), "a worker served nothing"

        # both workers send webhook deliveries; each delivery is sent once (the outbox's lease)
        served = ServedAt(url)
        assert api(served, "POST", "/user/repos", token, {"name": "hooked"}).status == 201
        assert api(served, "POST", "/repos/admin/hooked/hooks", token, {"config": {"url": receiver.url},
                                                                          "events": ["issues"]}).status == 201
        for n in range(20):
            assert api(served, "POST", "/repos/admin/hooked/issues", token, {"title": "issue %d" % n}).status == 201
        deliveries = [headers["x-github-delivery"] for headers, _ in receiver.wait_for(21)]    # the ping, and 20
        time.sleep(1)
        assert len(receiver.received) == 21 and len(set(deliveries)) == 21

        # a worker dies: what its socket held is reset (a client retries), and from then on the other answers
        os.kill(workers[1], signal.SIGKILL)
        assert wait_for(lambda: all_answered(url, token, 50), seconds=5)
        assert wait_for(lambda: len(children(supervisor.pid)) == 2 and workers[1] not in children(supervisor.pid))
        replaced = children(supervisor.pid)
        assert wait_for(lambda: all_answered(url, token, 50))

        supervisor.send_signal(signal.SIGTERM)
        code, said = supervisor.wait(timeout=60), supervisor.stderr.read()
        assert code == 0 and "stopped 2 workers" in said, said
        assert not [pid for pid in replaced if running(pid)]
    finally:
        receiver.close()
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def start_node(data):
    """A server on a port of its own over ``data`` (and this lane's database), as `serve` starts one."""
    node = subprocess.Popen([*CLI, "serve", "--port", "0", "--data", str(data), "--quiet", "--egress-allow-loopback"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    node.url = node.stdout.readline().split()[-1]
    threading.Thread(target=node.stdout.read, daemon=True).start()      # (the rest of its banner)
    return node


def push_until_it_lands(clone, url, env, attempts=30):
    """A pusher's loop: push; when another got there first, pull --rebase and push again."""
    for _ in range(attempts):
        if git(clone, "push", "-q", url, "HEAD:main", env=env, check=False).returncode == 0:
            return True
        git(clone, "pull", "-q", "--rebase", url, "main", env=env, check=False)
    return False


def test_two_nodes_share_one_database_pushes_numbers_and_deliveries(tmp_path):
    data = tmp_path / "data"
    nodes = [start_node(data)]
    receiver = Receiver()
    try:
        token = (data / "first-admin-token").read_text().strip()
        nodes.append(start_node(data))
        first, second = (ServedAt(node.url) for node in nodes)
        assert api(first, "POST", "/user/repos", token, {"name": "shared", "auto_init": True}).status == 201
        assert api(second, "POST", "/repos/admin/shared/hooks", token, {"config": {"url": receiver.url},
                                                                          "events": ["push", "issues"]}).status == 201
        # four pushers, each five commits, each through both nodes in turn: every commit lands
        landed = []

        def pusher(n):
            clone = str(tmp_path / ("clone%d" % n))
            env = git_env(tmp_path)
            git(str(tmp_path), "clone", "-q", remote(first, "admin/shared", token), clone, env=env)
            for i in range(5):
                commit_file(clone, "p%d/%d.txt" % (n, i), "pusher %d commit %d\n" % (n, i))
                landed.append(push_until_it_lands(clone, remote((first, second)[(n + i) % 2], "admin/shared", token),
                                                  env))
        pushers = [threading.Thread(target=pusher, args=(n,)) for n in range(4)]
        for thread in pushers:
            thread.start()
        # meanwhile issues through both nodes: each its own number
        numbers = [api((first, second)[i % 2], "POST", "/repos/admin/shared/issues", token,
                       {"title": "issue %d" % i}).json["number"] for i in range(20)]
        for thread in pushers:
            thread.join()
        assert landed == [True] * 20 and sorted(numbers) == list(range(1, 21))
        # every push and issue delivered once, whichever node sent it (the outbox's lease)
        deliveries = receiver.wait_for(41, timeout=30)               # the ping, 20 pushes that landed, 20 issues
        time.sleep(1)
        events = [headers["x-github-event"] for headers, _ in deliveries]
        assert len(receiver.received) == 41 and {e: events.count(e) for e in events} == {"ping": 1, "push": 20,
                                                                                          "issues": 20}
        assert len({headers["x-github-delivery"] for headers, _ in deliveries}) == 41

        # six pull requests, opened and merged through both nodes at once: each merged, each its own number
        main = api(first, "GET", "/repos/admin/shared/git/ref/heads/main", token).json["object"]["sha"]
        for n in range(6):
            node = (first, second)[n % 2]
            assert api(node, "POST", "/repos/admin/shared/git/refs", token, {"ref": "refs/heads/topic%d" % n,
                                                                              "sha": main}).status == 201
            assert api(node, "PUT", "/repos/admin/shared/contents/topic%d.txt" % n, token, {
                "message": "topic %d" % n, "content": "dG9waWMK", "branch": "topic%d" % n}).status == 201
        opened = [api((first, second)[n % 2], "POST", "/repos/admin/shared/pulls", token, {
            "title": "topic %d" % n, "head": "topic%d" % n, "base": "main"}).json["number"] for n in range(6)]
        assert sorted(opened) == list(range(21, 27))                   # after the twenty issues
        merged = []

        def merge(number, node):
            for _ in range(10):             # a merge that lost the race to another is tried again, as a client does
                answer = api(node, "PUT", "/repos/admin/shared/pulls/%d/merge" % number, token, {})
                if answer.status == 200:
                    merged.append(number)
                    return
                time.sleep(0.2)
        mergers = [threading.Thread(target=merge, args=(number, (first, second)[number % 2])) for number in opened]
        for thread in mergers:
            thread.start()
        for thread in mergers:
            thread.join()
        assert sorted(merged) == opened

        check = str(tmp_path / "check")
        git(str(tmp_path), "clone", "-q", remote(second, "admin/shared", token), check, env=git_env(tmp_path))
        assert len(git(check, "log", "--format=%H").stdout.split()) == 21 + 6 * 2  # and each pull's commit and merge
        assert sorted(name for name in os.listdir(check) if name.startswith("topic")) == [
            "topic%d.txt" % n for n in range(6)]

        # a node killed mid-push: the push lands whole or not at all, and the other node carries on
        big = str(tmp_path / "clone0")
        for i in range(30):
            commit_file(big, "big/%d.bin" % i, os.urandom(200000).hex())
        pushing = subprocess.Popen(["git", "push", "-q", remote(second, "admin/shared", token), "HEAD:main"], cwd=big,
                                   env=git_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        nodes[1].kill()
        nodes[1].wait()
        pushing.wait(timeout=60)
        assert push_until_it_lands(big, remote(first, "admin/shared", token), git_env(tmp_path))
        assert api(first, "POST", "/repos/admin/shared/issues", token, {"title": "after"}).json["number"] == 27
    finally:
        receiver.close()
        for node in nodes:
            if node.poll() is None:
                node.terminate()
                node.wait(timeout=60)
    srv = agentgit.make_server(data, port=0).start()            # a node started again settles what the kill left
    try:
        assert_consistent(srv)
    finally:
        srv.stop()


def test_a_delivery_a_dead_node_claimed_is_sent_by_the_other_once_its_lease_lapses(tmp_path):
    """A node claims a delivery and dies before sending it: the other node leaves it alone while the
    lease holds, sends it once the lease has lapsed (the lapse's 60 seconds stood in for by moving the
    lease back), and sends it once."""
    data, receiver = tmp_path / "data", Receiver()
    first = agentgit.make_server(data, port=0, egress_allow_loopback=True).start()
    second = None
    try:
        alice = first.add_user("alice")
        assert api(first, "POST", "/user/repos", alice, {"name": "hooked"}).status == 201
        assert api(first, "POST", "/repos/alice/hooked/hooks", alice, {"config": {"url": receiver.url},
                                                                        "events": ["issues"]}).status == 201
        receiver.wait_for(1)                                            # the ping
        first.deliveries.stop()                                         # the first node's sender dies ...
        assert api(first, "POST", "/repos/alice/hooked/issues", alice, {"title": "bug"}).status == 201
        claimed = agentgit.claim_delivery(first.app.store)              # ... having claimed the delivery
        assert claimed["event"] == "issues"
        second = agentgit.make_server(data, port=0, egress_allow_loopback=True).start()
        time.sleep(1.5)
        assert len(receiver.received) == 1                              # the lease holds: nobody sends it
        with second.app.store.transaction() as db:
            db.execute("UPDATE hook_deliveries SET leased_until = ? WHERE id = ?", (time.time() - 1, claimed["id"]))
        assert receiver.wait_for(2)[1][0]["x-github-delivery"] == claimed["guid"]
        time.sleep(1.5)
        assert len(receiver.received) == 2
        row = second.app.store.one("SELECT state, attempt FROM hook_deliveries WHERE id = ?", claimed["id"])
        assert row["state"] == "delivered"
    finally:
        receiver.close()
        first.stop()
        if second is not None:
            second.stop()
