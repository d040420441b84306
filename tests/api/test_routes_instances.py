import httpx

from sipbridge.store import service
from sipbridge.store.db import Database


async def test_list_instances(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, db: Database
) -> None:
    assert (await client.get("/api/instances")).json() == []
    await service.register_instance(db, "b", "127.0.0.1:5072")
    first = await service.register_instance(db, "a", "127.0.0.1:5071")
    await service.stop_instance(db, "b")
    response = await client.get("/api/instances")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [i["id"] for i in body] == ["a", "b"]
    assert body[0] == first.record.to_json()
    assert body[1]["state"] == "stopped" and body[1]["sip_address"] == "127.0.0.1:5072"
    assert (await anon.get("/api/instances")).status_code == 401
