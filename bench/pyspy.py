"""Sample a server under load with py-spy and say where its time goes (own time per function).

py-spy is not a dependency of Batchgate: `.venv/bin/pip install py-spy` to use `--profile`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

# One line of py-spy's raw (collapsed) output: "thread (tid): name;frame;frame... count",
# each frame "function (path:line)", the path relative to site-packages or the working directory.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
RATE = 100  # samples per second per thread, py-spy's default
# Packages at the bottom of nearly every stack: not worth naming in "in the stack".
_EVERYWHERE = {"runpy", "app", "uvicorn", "asyncio", "threading", "bench"}


def executable() -> str | None:
    """py-spy next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path) -> Path:
    """Sample process `pid` for `seconds` into `out` (raw collapsed stacks, by function)."""
    spy = executable()
    if spy is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    command = [spy, "record", "--pid", str(pid), "-d", f"{seconds:g}", "-r", str(RATE)]
    # --gil: only samples of the thread holding the GIL, i.e. Python's CPU time. Intake is bound by
    # it, and without --gil threads blocked on a lock or a queue are sampled as busy.
    command += ["-f", "raw", "--function", "--threads", "--gil", "-o", str(out)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await process.communicate()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"py-spy exited with {process.returncode}: {err.decode()}")
    return out


@contextlib.asynccontextmanager
async def recording(pid: int, out: Path) -> AsyncIterator[None]:
    """Sample process `pid` (as `record` does) until the block ends; then say where its time went."""
    spy = executable()
    if spy is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    command = [spy, "record", "--pid", str(pid), "-r", str(RATE), "-f", "raw", "--function"]
    command += ["--threads", "--gil", "-o", str(out)]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    started = time.perf_counter()
    try:
        yield
    finally:
        # SIGINT: py-spy stops sampling and writes what it has.
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(30):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    with contextlib.suppress(FileNotFoundError):  # py-spy wrote nothing: no sample taken
        print(
            f"profile of pid {pid}, raw stacks in {out}\n" + summarize(out, time.perf_counter() - started, 25)
        )


def _package(path: str) -> str:
    """The top-level package (or stdlib module) a frame's file belongs to."""
    path = path.removeprefix("<frozen ").rstrip(">")
    return re.split(r"[/.]", path, maxsplit=1)[0] or path


def summarize(raw: Path, seconds: float, top: int = 10) -> str:
    """Own time per function (the leaf of each sample), per package and per thread, as text;
    plus how often each package is anywhere in the stack (its inclusive time)."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        thread, _, frames = stack.partition(";")
        frames = frames or "(no Python frame)"
        n = int(count)
        names = [_package(m["path"]) if (m := _FRAME.match(f)) else f for f in frames.split(";")]
        own[frames.rsplit(";", 1)[-1]] += n
        packages[names[-1]] += n
        inclusive.update(dict.fromkeys(set(names), n))
        threads[re.sub(r"^thread \(\w+\): ", "", thread)] += n
    total = sum(own.values()) or 1

    def shares(counter: Counter[str], count: int) -> str:
        return ", ".join(f"{name} {n / total:.0%}" for name, n in counter.most_common(count))

    inclusive = Counter({k: v for k, v in inclusive.items() if k not in _EVERYWHERE})
    return "\n".join(
        [
            f"py-spy --gil: {total} samples holding the GIL ({RATE}/s for {seconds:g} s)",
            f"  by thread: {shares(threads, 5)}",
            f"  own time by package: {shares(packages, 8)}",
            f"  in the stack, by package: {shares(inclusive, 8)}",
            f"  top {top} functions by own time:",
            *(f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)),
        ]
    )
