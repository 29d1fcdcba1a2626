"""Run wrk (the Debian package) against a URL; its report is read by testkit.wrk."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

from testkit.wrk import POST_SCRIPT, WrkResult, parse


def available() -> bool:
    return shutil.which("wrk") is not None


async def post(
    url: str, prefix: str, duration: float, connections: int, threads: int = 2, script: Path = POST_SCRIPT
) -> WrkResult:
    """`wrk -tT -cC -dDs --latency -s wrk_post.lua URL -- PREFIX` in its own process.

    wrk's own 2 s timeout is raised to 10 s: a slow answer on a loaded machine is still an
    answer, and its latency shows in p99 rather than as an error.
    """
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    command += ["--timeout", "10s", "-s", str(script), url, "--", prefix]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(duration + 30):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:  # Ctrl-C, the deadline: wrk must not outlive the run
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {err.decode()}{out.decode()}")
    return parse(out.decode())
