"""Artifacts: a job's `uses: actions/upload-artifact@v4` runs agentgit's stand-in (nothing here reaches
github.com), a later job's `actions/download-artifact@v4` reads it back, and the REST API and the real
`gh run download` list and fetch them. Only a job of the run adds to it, with its job token while it runs;
a zip that would unpack outside its folder, or a name that is a path, is refused."""
import io
import json
import re
import shutil
import zipfile

import pytest

from conftest import api, ext, gh, gh_over_socket
from test_runs import drop_box, finished, running, running_for_gh, shape_problems, with_workflow  # noqa: F401

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

BUILD = """name: Build
on: [workflow_dispatch]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: mkdir -p dist/sub && echo one > dist/a.txt && echo two > dist/sub/b.txt && echo no > dist/.hidden
      - id: up
        uses: actions/upload-artifact@v4
        with:
          name: dist
          path: |
            dist/
            !dist/sub/ignored.txt
      - run: echo "uploaded ${{ steps.up.outputs.artifact-id }} ${{ steps.up.outputs.artifact-digest }}"
      - uses: actions/upload-artifact@v4
        with:
          name: readme
          path: README.md
          retention-days: 5
      - uses: actions/upload-artifact@v4
        with:
          name: nothing
          path: no-such-folder/
  test:
    needs: build
    runs-on: ubuntu-latest
    steps:
      - id: down
        uses: actions/download-artifact@v4
        with:
          name: dist
          path: got
      - run: cat got/a.txt got/sub/b.txt && test ! -e got/.hidden && echo "into ${{ steps.down.outputs.download-path }}"
      - uses: actions/download-artifact@v4
        with:
          path: all
      - run: ls all && head -1 all/readme/README.md
"""


def test_a_job_uploads_the_next_downloads_and_gh_run_download_fetches_them(tmp_path):
    with running_for_gh(tmp_path) as srv:
        alice = with_workflow(srv, BUILD, name="build.yml")
        started = api(srv, "POST", "/repos/alice/app/actions/workflows/build.yml/dispatches", alice, {
            "ref": "main", "return_run_details": True})
        run_id = started.json["workflow_run_id"]
        run = finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run_id)
        jobs = api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % run_id, alice).json["jobs"]
        logs = {j["name"]: api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % j["id"], alice).raw.decode()
                for j in jobs}
        assert run["conclusion"] == "success", "\n".join(logs.values())
        assert "No files were found with the provided path: no-such-folder/" in logs["build"]
        assert "one" in logs["test"] and "two" in logs["test"] and "# app" in logs["test"]

        listed = api(srv, "GET", "/repos/alice/app/actions/runs/%d/artifacts" % run_id, alice).json
        assert shape_problems("GET", "/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts", 200, listed) == []
        artifacts = {a["name"]: a for a in listed["artifacts"]}
        assert sorted(artifacts) == ["dist", "readme"] and listed["total_count"] == 2
        dist = artifacts["dist"]
        assert "uploaded %d %s" % (dist["id"], dist["digest"].split(":")[1]) in logs["build"]
        assert dist["workflow_run"]["id"] == run_id and not dist["expired"]
        assert artifacts["readme"]["expires_at"] < dist["expires_at"]      # 5 days, and the default 90
        archive = zipfile.ZipFile(io.BytesIO(api(srv, "GET", dist["archive_download_url"].split("/api/v3", 1)[1],
                                                 alice).raw))
        assert sorted(archive.namelist()) == ["a.txt", "sub/b.txt"]       # the folder named is the root; no .hidden
        one = api(srv, "GET", "/repos/alice/app/actions/artifacts/%d" % dist["id"], alice).json
        assert shape_problems("GET", "/repos/{owner}/{repo}/actions/artifacts/{artifact_id}", 200, one) == []
        assert api(srv, "GET", "/repos/alice/app/actions/artifacts?name=readme", alice).json["total_count"] == 1
        assert api(srv, "GET", "/repos/alice/app/actions/artifacts/%d/tar" % dist["id"], alice).status == 404

        env = gh_over_socket(srv, alice, tmp_path)
        gh(env, "run", "download", str(run_id), "-R", "alice/app", "-D", str(tmp_path / "every"))
        assert (tmp_path / "every/dist/sub/b.txt").read_text() == "two\n"
        assert (tmp_path / "every/readme/README.md").read_text().startswith("# app")
        gh(env, "run", "download", str(run_id), "-R", "alice/app", "-n", "dist", "-D", str(tmp_path / "one"))
        assert (tmp_path / "one/a.txt").read_text() == "one\n"

        # deleting takes what deletes a run; the run's deletion takes its artifacts with it
        assert api(srv, "DELETE", "/repos/alice/app/actions/artifacts/%d" % dist["id"], alice).status == 204
        assert api(srv, "GET", "/repos/alice/app/actions/artifacts/%d" % dist["id"], alice).status == 404
        assert api(srv, "DELETE", "/repos/alice/app/actions/runs/%d" % run_id, alice).status == 204
        assert api(srv, "GET", "/repos/alice/app/actions/artifacts", alice).json["total_count"] == 0


# A job that posts to the upload endpoint itself: a good zip, and each way to do it wrong; the status of
# each, one a line in its log; its token to a file the test uses after the run.
POSTER = r"""name: Poster
on: [workflow_dispatch]
jobs:
  post:
    runs-on: ubuntu-latest
    steps:
      - env:
          TOKEN: ${{ github.token }}
        run: |
          echo "$TOKEN" > %(token_file)s
          python3 - <<'PY'
          import io, os, urllib.error, urllib.request, zipfile
          def zipped(*names):
              out = io.BytesIO()
              with zipfile.ZipFile(out, "w") as z:
                  for name in names:
                      z.writestr(name, "x")
              return out.getvalue()
          base = "%%s/api/ext/v1/repos/%%s/actions/runs/" %% (os.environ["GITHUB_SERVER_URL"], os.environ["GITHUB_REPOSITORY"])
          run = os.environ["GITHUB_RUN_ID"]
          for label, run_id, query, body in [
                  ("good", run, "name=ok", zipped("a/b.txt")), ("again", run, "name=ok", zipped("c.txt")),
                  ("overwrite", run, "name=ok&overwrite=true", zipped("c.txt")),
                  ("slash-name", run, "name=../../etc", zipped("a")), ("dots-name", run, "name=..", zipped("a")),
                  ("escaping-entry", run, "name=e1", zipped("../../outside.txt")),
                  ("absolute-entry", run, "name=e2", zipped("/etc/cron.d/x")),
                  ("not-a-zip", run, "name=e3", b"plain text"), ("long-retention", run, "name=e4&retention_days=91", zipped("a")),
                  ("other-run", "%(other_run)s", "name=ok", zipped("a"))]:
              request = urllib.request.Request(base + run_id + "/artifacts?" + query, data=body, method="POST",
                                               headers={"Authorization": "token " + os.environ["TOKEN"]})
              try:
                  status = urllib.request.urlopen(request).status
              except urllib.error.HTTPError as error:
                  status = error.code
              print("POSTED %%s %%d" %% (label, status))
          PY
"""


def test_only_a_job_of_the_run_adds_to_it_and_never_a_path(running, drop_box):
    srv = running
    token_file = drop_box / "job-token"
    alice = with_workflow(srv, "name: Earlier\non: [workflow_dispatch]\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
                               "    steps:\n      - run: 'true'\n", name="earlier.yml")
    assert api(srv, "POST", "/repos/alice/app/actions/workflows/earlier.yml/dispatches", alice, {"ref": "main"}).status \
        == 204
    earlier = api(srv, "GET", "/repos/alice/app/actions/runs", alice).json["workflow_runs"][0]["id"]
    finished(srv, alice, "/repos/alice/app/actions/runs/%d" % earlier)
    assert api(srv, "PUT", "/repos/alice/app/contents/.github/workflows/poster.yml", alice, {
        "message": "poster", "content": __import__("base64").b64encode((POSTER % {
            "token_file": token_file, "other_run": earlier}).encode()).decode()}).status == 201
    started = api(srv, "POST", "/repos/alice/app/actions/workflows/poster.yml/dispatches", alice, {
        "ref": "main", "return_run_details": True}).json
    run_id = started["workflow_run_id"]
    finished(srv, alice, "/repos/alice/app/actions/runs/%d" % run_id)
    job = api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % run_id, alice).json["jobs"][0]
    log = api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % job["id"], alice).raw.decode()
    posted = dict(re.findall(r"POSTED ([a-z-]+) (\d+)", log))
    assert posted == {"good": "201", "again": "409", "overwrite": "201", "slash-name": "422", "dots-name": "422",
                      "escaping-entry": "422", "absolute-entry": "422", "not-a-zip": "422", "long-retention": "422",
                      "other-run": "403"}, log
    kept = api(srv, "GET", "/repos/alice/app/actions/runs/%d/artifacts" % run_id, alice).json["artifacts"]
    assert [a["name"] for a in kept] == ["ok"]
    archive = api(srv, "GET", "/repos/alice/app/actions/artifacts/%d/zip" % kept[0]["id"], alice).raw
    assert zipfile.ZipFile(io.BytesIO(archive)).namelist() == ["c.txt"]      # the overwrite's
    # the run's job token is dead with the run; alice's own token is no job token
    upload = "/repos/alice/app/actions/runs/%d/artifacts?name=late" % run_id
    token = token_file.read_text().strip()
    assert ext(srv, "POST", upload, token, raw_body=b"PK\x05\x06" + b"\0" * 18).status == 401
    refused = ext(srv, "POST", upload, alice, raw_body=b"PK\x05\x06" + b"\0" * 18)
    assert refused.status == 403 and "task token" in refused.json["message"]
    audit = ext(srv, "GET", "/audit?action=keep_run_files", alice).json
    assert any("only a job of run %d" % earlier in json.dumps(row) for row in audit), audit


CACHED = """name: Cached
on: [workflow_dispatch]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - id: cache
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-v1
          restore-keys: deps-
      - if: steps.cache.outputs.cache-hit != 'true'
        run: mkdir -p deps && echo "built by run $GITHUB_RUN_NUMBER" > deps/lib.txt
      - run: echo "HIT ${{ steps.cache.outputs.cache-hit }} $(cat deps/lib.txt)"
"""


def test_actions_cache_saves_at_a_jobs_end_restores_in_the_next_run_and_gh_lists_and_deletes_it(tmp_path):
    """`uses: actions/cache@v4` runs agentgit's stand-in (a JavaScript action, for its post step): the first
    run misses and saves at its end, for its branch; the next restores it; gh cache list and delete see it."""
    if shutil.which("node") is None:
        pytest.skip("node runs actions/cache's stand-in, as it runs the real one")
    with running_for_gh(tmp_path) as srv:
        alice = with_workflow(srv, CACHED, name="cached.yml")
        logs = []
        for number in (1, 2):
            assert api(srv, "POST", "/repos/alice/app/actions/workflows/cached.yml/dispatches", alice,
                       {"ref": "main"}).status == 204
            run = finished(srv, alice, "/repos/alice/app/actions/runs/%d" % number)
            job = api(srv, "GET", "/repos/alice/app/actions/runs/%d/jobs" % number, alice).json["jobs"][0]
            logs.append(api(srv, "GET", "/repos/alice/app/actions/jobs/%d/logs" % job["id"], alice).raw.decode())
            assert run["conclusion"] == "success", logs[-1]
        assert "Cache not found for input keys: deps-v1, deps-" in logs[0] and "Cache saved with key: deps-v1" in logs[0]
        assert "HIT true built by run 1" in logs[1] and "not saving cache" in logs[1]
        caches = api(srv, "GET", "/repos/alice/app/actions/caches", alice).json
        assert shape_problems("GET", "/repos/{owner}/{repo}/actions/caches", 200, caches) == []
        assert [(c["key"], c["ref"]) for c in caches["actions_caches"]] == [("deps-v1", "refs/heads/main")]
        env = gh_over_socket(srv, alice, tmp_path)
        assert "deps-v1" in gh(env, "cache", "list", "-R", "alice/app").stdout
        gh(env, "cache", "delete", "deps-v1", "-R", "alice/app")
        assert api(srv, "GET", "/repos/alice/app/actions/cache/usage", alice).json["active_caches_count"] == 0
