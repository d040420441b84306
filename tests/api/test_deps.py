from fastapi import FastAPI
from starlette.requests import Request

from sipbridge.api.deps import get_db, get_default_region
from sipbridge.store.db import Database


def test_dependencies_read_the_app_state() -> None:
    db = Database("sqlite://")
    app = FastAPI()
    app.state.db = db
    app.state.default_region = "GB"
    request = Request({"type": "http", "app": app, "headers": []})
    assert get_db(request) is db
    assert get_default_region(request) == "GB"
