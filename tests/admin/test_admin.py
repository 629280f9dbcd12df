import asyncio
import os
import stat
import threading

import pytest

from agent.admin import AdminClient, AdminError, AdminServer, Response


@pytest.fixture
def served(tmp_path):
    """An AdminServer on its own loop thread; yields (server, client)."""
    path = str(tmp_path / "run" / "admin.sock")
    server = AdminServer(path)
    server.route("GET", "/healthz", lambda r: "ok")
    server.route("GET", "/stats", lambda r: {"a": 1, "q": r.query})
    server.route("POST", "/echo", lambda r: Response(202, r.json()))
    server.route("GET", "/bad", lambda r: (_ for _ in ()).throw(ValueError("bad value")))

    async def slow(r):
        await asyncio.sleep(0.01)
        return {"slow": True}

    server.route("GET", "/slow", slow)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(5)
    yield server, AdminClient(path)
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)


def test_socket_mode_is_0600(served):
    server, _ = served
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600


def test_json_text_query_and_post(served):
    _, client = served
    assert client.get("/healthz") == "ok"
    assert client.get("/stats?x=1") == {"a": 1, "q": {"x": "1"}}
    assert client.post("/echo", {"k": [1, 2]}) == {"k": [1, 2]}
    assert client.get("/slow") == {"slow": True}
    assert client.alive()


def test_errors_have_status_and_reason(served):
    _, client = served
    with pytest.raises(AdminError) as e:
        client.get("/nope")
    assert e.value.status == 404 and "/nope" in str(e.value)
    with pytest.raises(AdminError) as e:
        client.get("/bad")
    assert e.value.status == 400 and "bad value" in str(e.value)
    with pytest.raises(AdminError) as e:
        client.post("/stats")
    assert e.value.status == 405


def test_missing_socket_is_a_clear_error(tmp_path):
    client = AdminClient(str(tmp_path / "none.sock"))
    with pytest.raises(AdminError, match="no admin socket"):
        client.get("/healthz")
    assert not client.alive()
