"""A real local TCP server that answers each HTTP request with scripted raw bytes.

For what the vendor fake (``exporter.fakeapi``, a well-behaved aiohttp server) cannot send:
exact framing (chunked, body until close, interim 100 responses), broken or doubled responses,
compressed bodies, and echoes of the exact request bytes the client sent.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

PATH = "/v1/partners-api/traffic-source"


@dataclass(frozen=True)
class Answer:
    data: bytes
    close: bool = False  # close the connection after sending ``data``
    delay: float = 0.0  # seconds before sending


def response(
    body: bytes | str | dict[str, Any] | list[Any],
    *,
    status: str = "200 OK",
    headers: tuple[str, ...] = (),
    length: bool = True,
) -> bytes:
    """A raw HTTP/1.1 response; a dict or list body is sent as JSON."""
    if isinstance(body, dict | list):
        body = json.dumps(body)
    raw = body.encode() if isinstance(body, str) else body
    head = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    if length:
        head.append(f"Content-Length: {len(raw)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


class RawServer:
    """Answers request n (counted over all connections) with ``answers[n]`` (the last repeats)."""

    def __init__(self, *answers: Answer | bytes, tls: ssl.SSLContext | None = None) -> None:
        self._answers = list(answers)
        self._tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        if self._tls is not None:  # by name: the certificate's, and the name is resolved
            return f"https://localhost:{self.port}{PATH}"
        return f"http://127.0.0.1:{self.port}{PATH}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    def _answer_for(self) -> Answer:
        index = min(len(self.requests) - 1, len(self._answers) - 1)
        answer = self._answers[index]
        return answer if isinstance(answer, Answer) else Answer(answer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    request = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                    return
                self.requests.append(request)
                answer = self._answer_for()
                if answer.delay:
                    await asyncio.sleep(answer.delay)
                writer.write(answer.data)
                await writer.drain()
                if answer.close:
                    return
        finally:
            self._writers.discard(writer)
            writer.close()
