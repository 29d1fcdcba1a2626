"""Sample a server under load with py-spy and say where its time goes (own time per function).

py-spy is not a dependency of Batchgate: `.venv/bin/pip install py-spy` to use `--profile`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

# One line of py-spy's raw (collapsed) output: "thread (tid): name;frame;frame... count",
# each frame "function (path:line)", the path relative to site-packages or the working directory.
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")
RATE = 100  # samples per second per thread, py-spy's default


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
    command += ["-f", "raw", "--function", "--threads", "-o", str(out)]
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


def _package(path: str) -> str:
    """The top-level package (or stdlib module) a frame's file belongs to."""
    path = path.removeprefix("<frozen ").rstrip(">")
    return re.split(r"[/.]", path, maxsplit=1)[0] or path


def summarize(raw: Path, seconds: float, top: int = 10) -> str:
    """Own time per function (the leaf of each sample), per package and per thread, as text."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        thread, _, frames = stack.partition(";")
        leaf = frames.rsplit(";", 1)[-1]
        n = int(count)
        match = _FRAME.match(leaf)
        own[leaf] += n
        packages[_package(match["path"]) if match else leaf] += n
        threads[re.sub(r"^thread \(\w+\): ", "", thread)] += n
    total = sum(own.values()) or 1
    lines = [f"py-spy: {total} samples with a thread on CPU ({RATE}/s for {seconds:g} s, idle excluded)"]
    lines.append("  by thread: " + ", ".join(f"{name} {n / total:.0%}" for name, n in threads.most_common()))
    lines.append(
        "  own time by package: " + ", ".join(f"{p} {n / total:.0%}" for p, n in packages.most_common(8))
    )
    lines.append(f"  top {top} functions by own time:")
    lines += [f"    {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return "\n".join(lines)
