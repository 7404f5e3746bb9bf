"""An OpenAI-compatible chat server on loopback that answers every request after a fixed latency: the
known bound (concurrency / latency) the LLM client's request rate is measured against. A stand-in on
purpose: a real model's latency varies, and the benchmark needs one it can divide by.

It speaks the real wire format (`POST /v1/chat/completions`, `GET /v1/models`) over real HTTP, and
answers `{"answer": "reply to: <message>"}` (valid for any schema with one string field `answer`).
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

MODEL = "latency-model"


def _completion(number: int, text: str, reply: str) -> dict:
    return {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": len(text.split()),
            "completion_tokens": len(reply.split()),
            "total_tokens": len(text.split()) + len(reply.split()),
        },
    }


def serve(latency_s: float, port_q, count, stop) -> None:
    """Run in a process of its own (no shared interpreter lock with the client): put the port on
    `port_q`, keep `count.value` = answered requests, return once `stop` is set."""

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        text = str(body["messages"][-1]["content"])
        await asyncio.sleep(latency_s)
        count.value += 1
        reply = json.dumps({"answer": f"reply to: {text}"})
        return web.json_response(_completion(count.value, text, reply))

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_q.put(site._server.sockets[0].getsockname()[1])
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await runner.cleanup()

    asyncio.run(main())
