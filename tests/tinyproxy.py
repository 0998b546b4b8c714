"""Debian's tinyproxy, a real HTTP proxy, started on 127.0.0.1 for the proxy tests."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from tooling import free_port, require_tool


class Tinyproxy:
    """A tinyproxy process in the foreground; ``user``/``password`` turn on Basic auth."""

    def __init__(self, directory: Path, *, user: str = "", password: str = "") -> None:
        self.binary = require_tool("tinyproxy", "/usr/bin/tinyproxy", "/usr/sbin/tinyproxy")
        self.port = free_port()
        self.log = directory / f"tinyproxy-{self.port}.log"
        self.config = directory / f"tinyproxy-{self.port}.conf"
        lines = [
            f"Port {self.port}",
            "Listen 127.0.0.1",
            "Timeout 30",
            f'LogFile "{self.log}"',
            "LogLevel Info",
            "MaxClients 50",
            "Allow 127.0.0.1",
            # No ConnectPort line: CONNECT may reach any port (the test servers' random ones).
        ]
        if user:
            lines.append(f"BasicAuth {user} {password}")
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials + '@' if credentials else ''}{self.address}"

    async def __aenter__(self) -> Tinyproxy:
        self.process = subprocess.Popen(
            [self.binary, "-d", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(500):  # until it accepts connections (it starts in milliseconds)
            if self.process.poll() is not None:
                raise RuntimeError(f"tinyproxy exited with {self.process.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            return self
        raise RuntimeError("tinyproxy never listened")

    async def __aexit__(self, *_: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def requests(self) -> list[str]:
        """The request lines the proxy received ("GET http://...", "CONNECT host:port")."""
        if not self.log.exists():
            return []
        marker = "): "
        return [
            line.split(marker, 1)[1]
            for line in self.log.read_text(errors="replace").splitlines()
            if "Request (file descriptor" in line and marker in line
        ]
