"""End-to-end throughput (intake -> batch -> inference -> webhook) against the raw HTTP work.

    .venv/bin/python -m bench.pipeline [--db sqlite|postgres] [--requests N]

Gateway: the real app with its scheduler, LOCAL_BASE_URL at the inference stand-in, webhooks to
the receiver stand-in; N requests submitted by C clients; time from the first submit to the N-th
distinct custom_id delivered with a 2xx. Limit: in the same round, N inference calls to a stand-in
followed by N webhook POSTs to a receiver, both at concurrency C (all the gateway must do at
minimum). Everything shares this process's event loop, as in bench.intake.
"""

from __future__ import annotations

import asyncio
import json
import time

from app.asgi import create_app
from bench.common import clients, fresh_database, hammer, parse_args, print_table, rate, ratio
from testkit import fast_settings, wait_until
from testkit.builders import client_request
from testkit.standins.inference import InferenceStandin
from testkit.standins.receiver import CUSTOM_ID_HEADER, WebhookReceiver
from testkit.standins.serve import serve


async def raw_rate(n: int, c: int, timeout: float) -> float:  # noqa: ASYNC109
    """N inference calls, then N webhook POSTs carrying their results; requests/s over both.

    One client per worker, as in bench.intake: with one shared httpx client at this concurrency
    httpcore's pool, not the work, is the limit (about 3x slower here).
    """
    async with (
        serve(InferenceStandin()) as inference_url,
        serve(WebhookReceiver()) as receiver_url,
        clients(inference_url, c) as backend,
        clients(receiver_url, c) as channel,
    ):
        results: list[object] = [None] * n

        async def infer(w: int, i: int) -> None:
            response = await backend[w].post(
                "/v1/chat/completions", json=client_request(f"raw-{i}", "")["body"]
            )
            response.raise_for_status()
            results[i] = {"status_code": response.status_code, "body": response.json()}

        async def deliver(w: int, i: int) -> None:
            line = {"id": f"batch_req_{i}", "custom_id": f"raw-{i}", "response": results[i], "error": None}
            headers = {"content-type": "application/json", CUSTOM_ID_HEADER: f"raw-{i}"}
            content = json.dumps(line, separators=(",", ":")).encode()
            (await channel[w].post("/hook", content=content, headers=headers)).raise_for_status()

        seconds = await hammer(n, c, infer, timeout)
        return n / (seconds + await hammer(n, c, deliver, timeout))


async def gateway_rate(kind: str, n: int, c: int, timeout: float) -> tuple[float, float]:  # noqa: ASYNC109
    """(end-to-end requests/s, submit-phase requests/s) through the real app on a fresh database."""
    inference, receiver = InferenceStandin(), WebhookReceiver()
    async with (
        fresh_database(kind) as url,
        serve(inference) as inference_url,
        serve(receiver) as receiver_url,
    ):
        settings = fast_settings(
            url,
            inference_url + "/v1",
            local_concurrency=c,
            batch_max_requests=500,
            local_batch_max_age_seconds=0.2,
        )
        async with serve(create_app(settings)) as app_url, clients(app_url, c) as pool:

            async def submit(w: int, i: int) -> None:
                body = client_request(f"e2e-{i}", receiver_url + "/hook")
                response = await pool[w].post("/api/requests", json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"submit: {response.status_code} {response.text[:200]}")

            start = time.monotonic()
            submitted = await hammer(n, c, submit, timeout)
            await wait_until(
                lambda: len({r.custom_id for r in receiver.successes()}) >= n,
                timeout - (time.monotonic() - start),
                interval=0.02,
                what=lambda: f"{n} requests delivered ({len(receiver.successes())} 2xx so far)",
            )
        seen: set[str | None] = set()
        for received in receiver.successes():  # in arrival order: stop at the N-th distinct one
            seen.add(received.custom_id)
            if len(seen) == n:
                return n / (received.at - start), n / submitted
    raise AssertionError("unreachable: the loop above saw n distinct successes")


async def main(kind: str, n: int, c: int, rounds: int, timeout: float) -> None:  # noqa: ASYNC109
    raw: list[float] = []
    gateway: list[float] = []
    submit: list[float] = []
    for _ in range(rounds):
        raw.append(await raw_rate(n, c, timeout))
        end_to_end, submitted = await gateway_rate(kind, n, c, timeout)
        gateway.append(end_to_end)
        submit.append(submitted)
    print_table(
        f"bench.pipeline  db={kind}  requests={n}  concurrency={c}  rounds={rounds} (medians; ratio range)",
        [
            ("raw: inference calls + webhook POSTs", rate(raw)),
            ("gateway: submit phase only", rate(submit)),
            ("gateway: first submit to N-th webhook", rate(gateway)),
            ("gateway / raw", ratio(gateway, raw)),
        ],
    )


if __name__ == "__main__":
    args = parse_args("python -m bench.pipeline", __doc__.split("\n")[0])
    asyncio.run(main(args.db, args.requests, args.concurrency, args.rounds, args.timeout))
