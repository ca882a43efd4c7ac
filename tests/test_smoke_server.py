"""The example script answers on a fresh engine, over a real socket."""

from tests.conftest import Engine


async def test_example_script_answers_on_a_fresh_engine(engine: Engine) -> None:
    response = await engine.client.get("/hello", params={"name": "x"})
    assert response.status_code == 200
    assert response.text == "Hello, x!"
    assert response.headers["content-type"] == "text/plain; charset=UTF-8"
    assert response.headers["x-request-id"].startswith("req_")
