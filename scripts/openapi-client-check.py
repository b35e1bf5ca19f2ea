"""Checks the Python client openapi-python-client generated from the OpenAPI document.

Run by scripts/openapi-client.sh with the generated package on PYTHONPATH. Each request the
client makes goes to an httpx MockTransport that records it and answers as the API would, so
this checks what a client built from the document sends and how it reads the answers.
"""

import datetime
import importlib
import json
import pkgutil
import sys
import uuid

import httpx

import hopsbridge_api_client
from hopsbridge_api_client import AuthenticatedClient, Client
from hopsbridge_api_client.api.account import update_me
from hopsbridge_api_client.api.admin import list_users
from hopsbridge_api_client.api.invitations import preview_invitation
from hopsbridge_api_client.api.metering import admin_samples, list_runs, my_usage
from hopsbridge_api_client.models import ErrorBody, UpdateMe

BASE = "https://api.hopsbridge.test"
sent = []


def answer(request: httpx.Request) -> httpx.Response:
    sent.append(request)
    if request.url.path == "/api/usage":
        return httpx.Response(200, json=[])
    if request.url.path == "/api/admin/metering/runs":
        return httpx.Response(200, json={"items": [], "total": 0})
    if request.url.path.startswith("/api/invitations/"):
        return httpx.Response(404, json={"code": "invitation_not_found", "message": "no such invitation", "request_id": "r"})
    return httpx.Response(400, json={"code": "nul_character", "message": "NUL", "request_id": "r"})


def clients():
    transport = {"transport": httpx.MockTransport(answer)}
    return (
        AuthenticatedClient(base_url=BASE, token="a-token", httpx_args=transport),
        Client(base_url=BASE, httpx_args=transport),
    )


def main(document_path: str) -> None:
    document = json.load(open(document_path))
    operations = {
        op["operationId"]: (method, path, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    # Every operation became a module that imports.
    names = [
        name
        for _, name, is_package in pkgutil.walk_packages(
            hopsbridge_api_client.api.__path__, "hopsbridge_api_client.api.", onerror=lambda name: None
        )
        if not is_package
    ]
    modules = {importlib.import_module(name).__name__.rsplit(".", 1)[-1] for name in names}
    missing = set(operations) - modules
    assert not missing, f"operations without a generated module: {sorted(missing)}"

    authenticated, anonymous = clients()
    # Query parameters are sent in the query, path parameters in the path.
    day = datetime.date(2026, 12, 1)
    response = my_usage.sync_detailed(client=authenticated, from_=day, to=day)
    assert response.status_code == 200, response
    request = sent[-1]
    assert request.url.path == "/api/usage" and dict(request.url.params) == {"from": "2026-12-01", "to": "2026-12-01"}, request.url
    assert request.headers["authorization"] == "Bearer a-token"
    cluster = uuid.uuid4()
    response = list_runs.sync_detailed(client=authenticated, cluster_id=cluster, limit=5)
    assert sent[-1].url.path == "/api/admin/metering/runs", sent[-1].url
    assert dict(sent[-1].url.params) == {"cluster_id": str(cluster), "limit": "5"}, sent[-1].url
    assert response.parsed.total == 0
    admin_samples.sync_detailed(client=authenticated, user_id=cluster, day=day)
    assert dict(sent[-1].url.params) == {"user_id": str(cluster), "day": "2026-12-01"}, sent[-1].url
    # Required query parameters are required arguments.
    try:
        admin_samples.sync_detailed(client=authenticated)  # type: ignore[call-arg]
        raise AssertionError("user_id and day are required")
    except TypeError:
        pass

    # An operation that needs a token takes only the authenticated client; a public one any.
    for module, public in ((update_me, False), (list_users, False), (my_usage, False), (preview_invitation, True)):
        annotation = str(module.sync_detailed.__annotations__["client"])
        assert ("Client" in annotation.replace("AuthenticatedClient", "")) == public, (module.__name__, annotation)
    response = preview_invitation.sync_detailed("abc", client=anonymous)
    assert response.status_code == 404 and "authorization" not in sent[-1].headers
    assert isinstance(response.parsed, ErrorBody) and response.parsed.code == "invitation_not_found"

    # Error answers the API documents are read into the error body; a body is sent as JSON.
    response = update_me.sync_detailed(client=authenticated, body=UpdateMe(name="Ada"))
    assert json.loads(sent[-1].content) == {"name": "Ada"} and sent[-1].method == "PATCH"
    assert isinstance(response.parsed, ErrorBody) and response.parsed.code == "nul_character", response
    print(f"generated client: {len(operations)} operations checked")


if __name__ == "__main__":
    main(sys.argv[1])
