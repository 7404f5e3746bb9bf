"""A small OpenAI-compatible speech server on loopback (`POST /v1/audio/speech`) for the tests of the
http TTS backend. It stands in for an external TTS server (none can run here) but speaks real audio:
every request is voiced by the espeak-ng CLI. `fail_first` answers the first N requests with HTTP 500
(the client must retry, a bounded number of times); an unknown voice is a 400."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

VOICES = {"onyx": "en-us+m1", "echo": "en-us+m3", "nova": "en-us+f3", "shimmer": "en-us+f2"}


class SpeechServer:
    def __init__(self, fail_first: int = 0):
        self.fail_first = fail_first
        self.requests = 0
        self.auth_headers: set[str] = set()
        self.bodies: list[dict] = []
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _speech(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        self.bodies.append(body)
        self.auth_headers.add(request.headers.get("Authorization", ""))
        if self.requests <= self.fail_first:
            return web.json_response({"error": {"message": "injected 500"}}, status=500)
        voice = VOICES.get(body.get("voice"))
        if voice is None or body.get("response_format") != "wav":
            msg = f"unknown voice {body.get('voice')!r} or format {body.get('response_format')!r}"
            return web.json_response({"error": {"message": msg}}, status=400)
        speed = int(175 * float(body.get("speed") or 1.0))
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng", "-v", voice, "-s", str(speed), "--stdout", "--", str(body["input"]),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        wav, _ = await proc.communicate()
        return web.Response(body=wav, content_type="audio/wav")

    def __enter__(self) -> SpeechServer:
        started = threading.Event()

        def serve():
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/v1/audio/speech", self._speech)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
