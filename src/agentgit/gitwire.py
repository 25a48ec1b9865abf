"""Git's wire protocol served from a bare repository: git upload-pack and receive-pack run as the git
binary (--stateless-rpc) or as dulwich's server, behind one engine an installation chooses; each refuses
the refs of a push it was not told to allow."""

import collections
import contextlib
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from dulwich.graph import can_fast_forward
from dulwich.repo import Repo

from agentgit.config import REQUEST_IDLE_TIMEOUT
from agentgit.errors import HTTPError


def pkt_line(text):
    data = text.encode() if isinstance(text, str) else text
    return b"%04x%s" % (len(data) + 4, data)


def service_header(service):
    return pkt_line("# service=%s\n" % service) + b"0000"


# what an engine answers for a ref the push did not decide (a name that is not valid, or not UTF-8)
UNDECIDED_REF = "refused: not a ref name this push was decided for"


# The update hook's first line: git receive-pack's parent must still be this server. A server killed
# mid-push (kill -9) leaves git running, reparented; it must not move a ref the next server's start-up
# has already recorded as not moved (reconcile_intents).
SERVER_ALIVE_CHECK = ('[ -r /proc/$PPID/stat ] && [ "$(cut -d" " -f4 /proc/$PPID/stat)" != "$AGENTGIT_SERVER_PID" ] && '
                      '{ echo "agentgit: the server stopped" >&2; exit 1; }\n')


# The update hook's way to ask the server about one ref once git has the push's objects (a grant's path
# rules read every commit): git runs the hook, the hook runs this with the server's socket and its ref,
# old and new; an answer is a refusal, printed as git prints a hook's words; no answer lets the ref move.
JUDGE_PROGRAM = r'''
import socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.settimeout(600)
sock.connect(sys.argv[1])
sock.sendall(b"\0".join(arg.encode("utf-8", "surrogateescape") for arg in sys.argv[2:5]))
sock.shutdown(socket.SHUT_WR)
answer = sock.makefile("rb").read().decode("utf-8", "replace")
if answer:
    sys.stderr.write("agentgit: %s\n" % answer)
    sys.exit(1)
'''


@contextlib.contextmanager
def judge_socket(directory, judge):
    """A Unix socket in ``directory`` answering JUDGE_PROGRAM with ``judge(ref, old, new)`` (a reason
    to refuse, or None), one question at a time, until the block ends; yields its path."""
    path = os.path.join(directory, "judge")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(4)
    done = threading.Event()

    def answer(conn):
        with conn:
            conn.settimeout(REQUEST_IDLE_TIMEOUT)
            question = conn.makefile("rb").read(8192).split(b"\0")
            try:
                reason = judge(*(part.decode("utf-8", "surrogateescape") for part in question)) if len(
                    question) == 3 else UNDECIDED_REF
            except Exception:      # noqa: BLE001 - a push the server cannot judge is refused, and logged
                logging.getLogger("agentgit").exception("judging a pushed ref")
                reason = "refused: the server could not check this ref"
            conn.sendall((reason or "").encode())

    def serve():
        while True:
            try:
                conn = server.accept()[0]
            except OSError:              # (out of descriptors): git's hook waits; try again shortly
                if done.is_set():
                    return
                time.sleep(0.05)
                continue
            if done.is_set():            # the block's end, knocking to wake accept()
                conn.close()
                return
            answer(conn)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        with socket.socket(socket.AF_UNIX) as knock:
            knock.connect(path)
        thread.join()
        server.close()


class GitBinaryEngine:
    """Pipes each request through ``git upload-pack/receive-pack --stateless-rpc``: the speed of
    a local clone, with protocol v2, every shallow and filter option, and atomic pushes."""

    name = "git"

    def __init__(self, git):
        self.git = git

    def command(self, service, path, hooks_dir=None, advertise=False):
        if service == "git-upload-pack":
            cmd = [self.git, "-c", "uploadpack.allowFilter=true", "-c", "uploadpack.allowAnySHA1InWant=true",
                   "upload-pack"]
        else:
            # fsckObjects keeps malformed objects out; the quarantine directory (git >= 2.11) keeps a
            # pack that dies mid-way out of the repository.
            cmd = [self.git, "-c", "core.hooksPath=%s" % hooks_dir, "-c", "receive.fsckObjects=true", "receive-pack"]
        return cmd + ["--stateless-rpc"] + (["--advertise-refs"] if advertise else []) + [path]

    def run(self, cmd, protocol, body, out):
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if body is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=dict(os.environ, GIT_PROTOCOL=protocol, AGENTGIT_SERVER_PID=str(os.getpid())))
        feeder = None
        if body is not None:   # git may answer before it has read everything: feed it from a thread
            feeder = threading.Thread(target=self.feed, args=(proc, body), daemon=True)
            feeder.start()
        try:
            while True:
                data = proc.stdout.read1(65536)
                if not data:
                    break
                out.write(data)
        except BaseException:
            proc.kill()        # the client went away: stop git too
            raise
        finally:
            proc.stdout.close()
            if feeder is not None:
                feeder.join(REQUEST_IDLE_TIMEOUT)
                if feeder.is_alive():
                    proc.kill()
            proc.wait()

    @staticmethod
    def feed(proc, body):
        """Copy the request body to git's stdin; on a broken or oversized body, stop git instead."""
        try:
            while True:
                data = body.read(65536)
                if not data:
                    break
                proc.stdin.write(data)
            proc.stdin.close()
        except (OSError, ValueError, HTTPError, ConnectionError):
            proc.kill()

    def advertise(self, path, service, protocol, out):
        if not (service == "git-upload-pack" and "version=2" in protocol):
            out.write(service_header(service))   # protocol v2 answers start with the capability list
        self.run(self.command(service, path, hooks_dir=os.devnull, advertise=True), protocol, None, out)

    def upload_pack(self, path, protocol, body, out):
        self.run(self.command("git-upload-pack", path), protocol, body, out)

    def receive_pack(self, path, protocol, body, out, allowed, denied, ff_only, judge=None):
        """Only the refs in ``allowed`` may move, ``ff_only`` = {ref: reason} of them by a fast-forward
        only, and (given a ``judge``) each once ``judge(ref, old, new)`` has no reason against it;
        ``denied`` = {ref: reason} says why the others may not. An ``update`` hook written for this push
        runs once the pack is in, with the new objects in the repository, before each ref moves, and
        refuses every ref it was not told to allow (default deny, on the exact name git passes it)."""
        with tempfile.TemporaryDirectory(prefix="agentgit-hooks-") as hooks, contextlib.ExitStack() as stack:
            ask = ""
            if judge is not None:
                ask = '%s -I -S -c %s %s "$1" "$2" "$3" || exit 1; ' % (
                    shlex.quote(sys.executable), shlex.quote(JUDGE_PROGRAM), shlex.quote(stack.enter_context(
                        judge_socket(hooks, judge))))
            cases = "".join('%s) %s%sexit 0;;\n' % (shlex.quote(ref), 'git merge-base --is-ancestor "$2" "$3" || '
                                                     '{ echo %s >&2; exit 1; }; ' % shlex.quote("agentgit: " + ff_only[ref])
                                                     if ref in ff_only else "", ask) for ref in sorted(allowed))
            cases += "".join("%s) echo %s >&2; exit 1;;\n" % (shlex.quote(ref), shlex.quote("agentgit: " + reason))
                             for ref, reason in sorted(denied.items()))
            hook = os.path.join(hooks, "update")
            with open(hook, "w") as f:
                f.write('#!/bin/sh\n%scase "$1" in\n%s*) echo %s >&2; exit 1;;\nesac\n' % (
                    SERVER_ALIVE_CHECK, cases, shlex.quote("agentgit: " + UNDECIDED_REF)))
            os.chmod(hook, 0o700)
            self.run(self.command("git-receive-pack", path, hooks_dir=hooks), protocol, body, out)


class DulwichEngine:
    """dulwich's pure-Python server, for machines without git. Slower (see bench/), protocol v0/v1
    only, and no 'atomic' capability: dulwich does not apply a multi-ref push transactionally."""

    name = "dulwich"

    def __init__(self):
        from dulwich.server import ReceivePackHandler, UploadPackHandler
        from dulwich.protocol import CAPABILITY_ATOMIC, Protocol, ReceivableProtocol, SIDE_BAND_CHANNEL_PROGRESS

        class PolicyReceivePack(ReceivePackHandler):
            allowed, denied, ff_only, judge = frozenset(), {}, {}, None

            def capabilities(self):
                return [c for c in super().capabilities() if c != CAPABILITY_ATOMIC]

            def _on_update(self, ref_name, old_sha, new_sha):
                ref = ref_name.decode("utf-8", "surrogateescape")     # matches only a name decided as valid
                reason = None if ref in self.allowed else self.denied.get(ref, UNDECIDED_REF)
                if reason is None and ref in self.ff_only and not can_fast_forward(self.repo, old_sha, new_sha):
                    reason = self.ff_only[ref]
                if reason is None and self.judge is not None:
                    reason = self.judge(ref, old_sha.decode(), new_sha.decode())
                if reason is None:
                    return None
                if self.has_capability(b"side-band-64k"):
                    self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, ("agentgit: %s\n" % reason).encode())
                return b"hook declined"

        class OneRepoBackend:
            def open_repository(self, path):
                return Repo(path)

        self.handlers = {"git-upload-pack": UploadPackHandler, "git-receive-pack": PolicyReceivePack}
        self.protocol, self.receivable = Protocol, ReceivableProtocol
        self.backend = OneRepoBackend()
        # Each dulwich upload-pack can hold hundreds of MB; more than two at once starve the machine.
        self.upload_slots = threading.BoundedSemaphore(2)
        self.push_locks = collections.defaultdict(threading.Lock)

    def handle(self, service, path, proto, advertise=False, policy=None):
        handler = self.handlers[service](self.backend, [path], proto, stateless_rpc=True, advertise_refs=advertise)
        if policy is not None:
            handler.allowed, handler.denied, handler.ff_only, handler.judge = policy
        try:
            handler.handle()
        finally:
            handler.repo.close()

    def advertise(self, path, service, protocol, out):
        out.write(service_header(service))
        self.handle(service, path, self.protocol(lambda n: b"", out.write), advertise=True)

    def upload_pack(self, path, protocol, body, out):
        with self.upload_slots:
            self.handle("git-upload-pack", path, self.receivable(body.read, out.write))

    def receive_pack(self, path, protocol, body, out, allowed, denied, ff_only, judge=None):
        # One push per repository at a time in this process: dulwich raises FileLocked, rather than
        # waiting, when two pushes lock the same ref file.
        with self.push_locks[path]:
            self.handle("git-receive-pack", path, self.receivable(body.read, out.write),
                        policy=(frozenset(allowed), denied, ff_only, judge))


def make_git_engine(choice):
    git = shutil.which("git")
    if choice == "git" and git is None:
        raise SystemExit("--git-engine git: no git binary on PATH")
    if choice in ("auto", "git") and git:
        return GitBinaryEngine(git)
    return DulwichEngine()
