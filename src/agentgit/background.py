"""Background workers: a thread that takes one piece of work at a time, the oldest first, woken when a
request makes some and every so often for what another process or a restart left. The webhook outbox's
sender and the workflow runs' executor are two."""

import sys
import threading
import traceback


class Worker:
    """Subclasses say how to ``claim`` the next piece of work (None: nothing waits) and how to ``work`` it."""

    def __init__(self, name, wake, interval, join_timeout):
        self.wake, self.interval, self.join_timeout = wake, interval, join_timeout
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def run(self):
        while not self.stopping.is_set():
            item = self.claim()
            if item is not None:
                try:
                    self.work(item)
                except Exception:       # (a bug, or what it worked on deleted under it): the worker goes on
                    print("agentgit: %s failed on row %s:\n%s" % (self.thread.name, item["id"], traceback.format_exc()),
                          file=sys.stderr)
                continue
            self.wake.wait(self.interval)
            self.wake.clear()

    def stop(self):
        self.stopping.set()
        self.wake.set()
        if self.thread.is_alive():
            self.thread.join(timeout=self.join_timeout)
