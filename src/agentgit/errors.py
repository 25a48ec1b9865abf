"""Errors: HTTPError, an answer in GitHub's error shape, and the 422 that names a field."""

from agentgit.config import DOCS_URL


class HTTPError(Exception):
    """An answer in GitHub's error shape: {"message", "documentation_url"[, "errors"]}."""

    def __init__(self, status, message, errors=None, headers=None, extra=None, page=None, step_up=False):
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers or {}
        self.extra = extra or {}
        self.page = page        # on web pages: HTML to show instead of the bare message
        self.step_up = step_up  # refused for want of a fresh second factor: a web page asks for the code

    def body(self):
        body = dict(self.extra, message=self.message, documentation_url=DOCS_URL)
        if self.errors:
            body["errors"] = self.errors
        return body


def invalid(resource, field, code="invalid", message=None):
    """422 Validation Failed naming the field, as GitHub answers bad input."""
    error = {"resource": resource, "field": field, "code": code}
    if message:
        error["message"] = message
    return HTTPError(422, "Validation Failed", errors=[error])
