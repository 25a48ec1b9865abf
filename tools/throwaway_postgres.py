"""A throw-away PostgreSQL cluster for the tests' PostgreSQL lane and `make bench`: initdb in a temporary
directory (as the postgres user where this runs as root: initdb refuses root), listening on a Unix socket
in that directory only, without fsync; each new_database() is an empty database of its own, named by URL.
Needs Debian's postgresql (or initdb on the PATH) and pg8000."""
import glob
import itertools
import os
import shutil
import subprocess
import tempfile


def postgres_bin(name):
    """The newest installed PostgreSQL's program (Debian keeps them off the PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/" + name)) or [shutil.which(name)]
    if not found[-1]:
        raise RuntimeError("no %s: PostgreSQL is not installed (apt-get install postgresql)" % name)
    return found[-1]


class Cluster:
    def __init__(self):
        import pg8000.dbapi
        self.directory = tempfile.mkdtemp(prefix="agentgit-pg-")
        self.as_owner = []
        if os.geteuid() == 0:
            import pwd
            owner = pwd.getpwnam("postgres")
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(self.directory, "data")
        self.run_program("initdb", "-D", self.data, "-A", "trust", "-U", "agentgit", "--no-sync", "-E", "UTF8",
                         "--locale=C")
        self.run_program("pg_ctl", "-D", self.data, "-w", "-l", os.path.join(self.directory, "log"), "-o",
                         "-k %s -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                         " -c max_connections=400" % self.directory, "start")
        self.admin = pg8000.dbapi.connect(user="agentgit", database="postgres",
                                          unix_sock=os.path.join(self.directory, ".s.PGSQL.5432"))
        self.admin.autocommit = True
        self.numbers = itertools.count(1)

    def run_program(self, name, *args, check=True):
        subprocess.run(self.as_owner + [postgres_bin(name), *args], check=check, capture_output=True, cwd="/")

    def new_database(self):
        name = "agentgit_%d" % next(self.numbers)
        self.admin.cursor().execute("CREATE DATABASE %s STRATEGY FILE_COPY" % name)
        return "postgresql://agentgit@/%s?host=%s" % (name, self.directory)

    def stop(self):
        self.admin.close()
        self.run_program("pg_ctl", "-D", self.data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
