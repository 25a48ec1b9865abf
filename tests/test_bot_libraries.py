"""The Python libraries bots are written with, unchanged: fastai's ghapi (contents, trees, a pull request, a
check, a merge, a release with an uploaded asset, paging) and gidgethub (REST with its paging iterator and
media types, GraphQL, the rate-limit headers). Skipped where make test could not install them."""
import asyncio
import base64

import pytest

from conftest import api


@pytest.fixture
def alice(server):
    token = server.add_user("alice")
    api(server, "POST", "/user/repos", token, {"name": "app", "auto_init": True})
    return token


def test_ghapi_from_a_file_to_a_release(server, alice, tmp_path):
    ghapi = pytest.importorskip("ghapi.all")
    asset = tmp_path / "app.tar.gz"
    asset.write_bytes(b"\x1f\x8b built")

    async def bot():        # ghapi 2 is asynchronous (its release helper is, whatever the client's mode)
        gh = ghapi.GhApi(owner="alice", repo="app", token=alice, gh_host=server.url + "/api/v3")
        seen = {}
        main = (await gh.git.get_ref("heads/main")).object.sha
        await gh.git.create_ref(ref="refs/heads/feature", sha=main)
        await gh.repos.create_or_update_file_contents(path="src/app.py", message="add app", branch="feature",
                                                      content=base64.b64encode(b"print('hi')\n").decode())
        seen["tree"] = {entry.path for entry in (await gh.git.get_tree(tree_sha="feature", recursive=1)).tree}
        pull = await gh.pulls.create(title="App", head="feature", base="main", body="adds the app")
        head = (await gh.pulls.get(pull.number)).head.sha
        await gh.checks.create(name="test", head_sha=head, status="completed", conclusion="success")
        seen["checks"] = [(c.name, c.conclusion) for c in (await gh.checks.list_for_ref(head)).check_runs]
        seen["merged"] = (await gh.pulls.merge(pull.number, merge_method="squash")).merged
        release = await gh.create_release("v1.0", branch="main", name="One", body="first", files=[asset])
        seen["assets"] = [(a.name, a.size) for a in await gh.repos.list_release_assets(release.id)]
        seen["latest"] = (await gh.repos.get_latest_release()).tag_name
        for n in range(5):
            await gh.issues.create(title="issue %d" % n)
        seen["titles"] = sorted([i.title async for page in ghapi.paged(gh.issues.list_for_repo, state="all",
                                                                        per_page=2) for i in page])
        await gh.issues.list_for_repo(state="all", per_page=2)
        seen["last_page"] = gh.last_page()             # ghapi reads the first page's Link header for the count,
        seen["in_parallel"] = sorted(i.title for page in await ghapi.pages(     # then fetches every page at once
            gh.issues.list_for_repo, seen["last_page"], state="all", per_page=2) for i in page)
        return seen
    seen = asyncio.run(bot())
    assert {"README.md", "src", "src/app.py"} == seen["tree"]
    assert seen["checks"] == [("test", "success")] and seen["merged"] is True
    assert seen["assets"] == [("app.tar.gz", 8)] and seen["latest"] == "v1.0"
    assert seen["titles"] == seen["in_parallel"] == ["App"] + ["issue %d" % n for n in range(5)]
    assert seen["last_page"] == 3


def test_gidgethub_rest_paging_media_and_graphql(server, alice):
    pytest.importorskip("gidgethub")
    httpx = pytest.importorskip("httpx")
    from gidgethub import BadRequest, sansio
    from gidgethub.httpx import GitHubAPI

    async def bot():
        async with httpx.AsyncClient() as client:
            gh = GitHubAPI(client, "agentgit-test-bot", oauth_token=alice, base_url=server.url + "/api/v3")
            for n in range(5):
                await gh.post("/repos/alice/app/issues", data={"title": "bug %d" % n})
            titles = [i["title"] async for i in gh.getiter("/repos/alice/app/issues{?per_page}", {"per_page": 2})]
            await gh.post("/repos/alice/app/issues/1/comments", data={"body": "on it"})
            await gh.patch("/repos/alice/app/issues/1", data={"state": "closed"})
            closed = await gh.getitem("/repos/alice/app/issues/1")
            readme = await gh.getitem("/repos/alice/app/contents/README.md",
                                      accept=sansio.accept_format(media="raw", json=False))
            commit = await gh.getitem("/repos/alice/app/commits/main", accept=sansio.accept_format(media="patch",
                                                                                                 json=False))
            try:
                await gh.post("/repos/alice/app/labels", data={"color": "zzz"})
                refused = None
            except BadRequest as error:
                refused = error.status_code
            graphql = await gh.graphql('query($n: Int!) { repository(owner: "alice", name: "app") { issue(number: $n)'
                                       ' { title state } } }', endpoint=server.url + "/api/graphql", n=1)
            return titles, closed, readme, commit, refused, graphql, gh.rate_limit
    titles, closed, readme, commit, refused, graphql, rate_limit = asyncio.run(bot())
    assert sorted(titles) == ["bug %d" % n for n in range(5)]               # five issues over three pages
    assert closed["state"] == "closed" and closed["comments"] == 1
    assert readme == "# app\n" and commit.startswith("From ")
    assert refused == 422
    assert graphql == {"repository": {"issue": {"title": "bug 0", "state": "CLOSED"}}}
    assert rate_limit.limit == 5000 and rate_limit.remaining == 5000
