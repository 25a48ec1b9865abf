"""The pages the API links to: every html_url agentgit answers with opens a page, for whoever may read
it (the signed-in human's session decides), escaped, in one layout; private ones are 404 to others."""
import re

from conftest import Browser, api, call, commit_file, git, remote


def test_every_link_the_api_gives_opens_a_page(server, tmp_path):
    alice = server.add_user("alice", password="pw")
    server.add_user("olga", password="pw")
    _, agent, _ = server.add_agent("bot")
    repo = api(server, "POST", "/user/repos", alice, {"name": "app", "private": True, "auto_init": True,
                                                      "description": "The <b>app</b>"}).json
    work = str(tmp_path / "w")
    git(str(tmp_path), "clone", "-q", remote(server, "alice/app", alice), work)
    git(work, "checkout", "-q", "-b", "feature/x")
    sha = commit_file(work, "src/main.py", "print('<hello>')\n", "Add <main>")
    git(work, "push", "-q", "origin", "feature/x")
    pull = api(server, "POST", "/repos/alice/app/pulls", alice, {"title": "Feature <x>", "head": "feature/x",
                                                                 "base": "main", "body": "Does <x>."}).json
    issue = api(server, "POST", "/repos/alice/app/issues", alice, {"title": "Bug <script>alert(1)</script>"}).json
    api(server, "POST", "/repos/alice/app/issues/2/comments", alice, {"body": "Seen <here>"})
    api(server, "POST", "/repos/alice/app/check-runs", alice, {"name": "lint", "head_sha": sha, "status": "completed",
                                                              "conclusion": "success"})
    commit = api(server, "GET", "/repos/alice/app/commits/" + sha, alice).json
    blob = api(server, "GET", "/repos/alice/app/contents/src/main.py?ref=feature/x", alice).json
    me = api(server, "GET", "/user", alice).json
    bot = api(server, "GET", "/user", agent).json
    links = {repo["html_url"]: ["The &lt;b&gt;app&lt;/b&gt;", "README.md", "feature/x", "# app"],
             pull["html_url"]: ["Feature &lt;x&gt; #1", "Does &lt;x&gt;.", "Add &lt;main&gt;", "lint: completed success",
                                "print(&#x27;&lt;hello&gt;&#x27;)"],
             issue["html_url"]: ["Bug &lt;script&gt;alert(1)&lt;/script&gt; #2", "Seen &lt;here&gt;"],
             commit["html_url"]: ["Add &lt;main&gt;", "src/main.py", "+1 −0"],
             blob["html_url"]: ["print(&#x27;&lt;hello&gt;&#x27;)"],
             me["html_url"]: ["a human", "app", "Bug &lt;script&gt;"],
             bot["html_url"]: ["an agent", "bound to no human", "none you can see"]}    # its workspace is private
    browser = Browser(server)
    browser.sign_in("alice", "pw")
    for url, expected in links.items():
        assert url.startswith(server.url + "/"), url
        page, text = browser.request("GET", url[len(server.url):])
        assert page.status == 200 and page.getheader("content-type").startswith("text/html"), (url, text[:300])
        for fragment in expected:
            assert fragment in text, (url, fragment)
        assert "<script>" not in text and '<link rel="stylesheet" href="/agentgit.css">' in text
        assert '<a href="/settings/agents">Agents</a>' in text                  # one layout, with navigation
    # the same links to someone who may not read alice/app, or to nobody signed in: not there
    outsider = Browser(server)
    outsider.sign_in("olga", "pw")
    for url in list(links)[:5]:
        for who in (outsider, Browser(server)):
            assert who.request("GET", url[len(server.url):])[0].status == 404, url
    assert "Bug &lt;script&gt;" not in outsider.request("GET", me["html_url"][len(server.url):])[1]
    assert call(server, "GET", "/agentgit.css").headers["content-type"].startswith("text/css")


def test_the_landing_page_says_what_this_is_and_how_to_connect(server):
    page = call(server, "GET", "/")
    text = page.raw.decode()
    assert page.status == 200 and "AI agents are first-class accounts" in text
    for fragment in ("%s/api/v3" % server.url, "%s/api/graphql" % server.url, "git clone %s/OWNER/REPO.git" % server.url,
                     "connect gh", 'href="/login"'):
        assert fragment in text, fragment
    assert "default-src 'none'; style-src 'self'" in page.headers["content-security-policy"]
    assert re.search(r"<h2>Public repositories</h2><ul><li>none yet</li>", text)
