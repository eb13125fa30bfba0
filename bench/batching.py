"""A simulated continuous-batching VLM server on 127.0.0.1: `slots` requests are served at once, each
for `seconds`; a request that finds every slot busy waits for one, as vLLM's scheduler makes it wait.

It speaks just enough of the OpenAI API for handwatch (GET /v1/models, POST /v1/chat/completions with
keep-alive) and never decodes the image, so the benchmark's own CPU stays out of the client's way.
It runs on its own asyncio thread and keeps, per request, when it arrived and when its reply left.
The camera roll's question (`transcribe.gate`: "What is this image?") is answered as a note, in
`look_seconds` of a slot (a small preview and a dozen tokens), and counted apart from the pages."""

from __future__ import annotations

import asyncio
import json
import threading
import time

LOOK = b"What is this image?"  # transcribe.gate.PROMPT's first words
KIND = '{"kind": "note", "language": "en"}'
REPLY = "Call grandma on Sunday\n\nBuy flour and sugar\n\nReturn library books\n\nFix the garden gate"


class BatchingServer:
    def __init__(self, slots: int, seconds: float = 0.5, text: str = REPLY, look_seconds: float = 0.1):
        self.slots, self.seconds, self.text, self.look_seconds = slots, seconds, text, look_seconds
        self.arrived: list[float] = []  # time.monotonic() when each page's request body was read
        self.replied: list[float] = []  # when its reply was written
        self.looked: list[float] = []  # when each answer to the camera roll's question was written
        self.first: list[float] = []  # when any request (a page's or a question's) arrived
        self.busy_peak = 0
        self._busy = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="batching-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> BatchingServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def reset(self) -> None:
        self.arrived, self.replied, self.looked, self.first, self.busy_peak = [], [], [], [], 0

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._sem = asyncio.Semaphore(self.slots)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0, backlog=256))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *headers = head.decode("latin-1").split("\r\n")
                method, path = line.split(" ")[:2]
                length = 0
                for h in headers:
                    if h.lower().startswith("content-length:"):
                        length = int(h.split(":", 1)[1])
                body_in = await reader.readexactly(length) if length else b""
                look = LOOK in body_in
                if method == "GET" and path.rstrip("/").endswith("/models"):
                    body = {"object": "list", "data": [{"id": "sim-vl", "object": "model", "owned_by": "bench"}]}
                elif method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                    self.first.append(time.monotonic())
                    if not look:
                        self.arrived.append(time.monotonic())
                    async with self._sem:
                        self._busy += 1
                        self.busy_peak = max(self.busy_peak, self._busy)
                        await asyncio.sleep(self.look_seconds if look else self.seconds)
                        self._busy -= 1
                    body = {
                        "id": "sim",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": "sim-vl",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": KIND if look else self.text},
                            }
                        ],
                        "usage": {"prompt_tokens": 900, "completion_tokens": 40, "total_tokens": 940},
                    }
                else:
                    body = {"error": {"message": "not found"}}
                data = json.dumps(body).encode()
                status = "404 Not Found" if "error" in body else "200 OK"
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
                )
                await writer.drain()
                if "choices" in body:
                    (self.looked if look else self.replied).append(time.monotonic())
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
