"""`serve --workers N`: N server processes on one port over the same data, as an operator starts them.
Every worker answers; a worker killed mid-service is replaced while the others keep answering; SIGTERM
stops them all gracefully; and work that must happen once (a webhook delivery) happens once."""
import http.client
import os
import signal
import subprocess
import time
import urllib.parse

from conftest import CLI, api
from test_webhooks import Receiver


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
