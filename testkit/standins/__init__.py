"""Stand-in servers on loopback, each a plain ASGI app served by uvicorn (serve.py): the inference
server (inference.py), the OpenAI Batch API (openai_batch.py), a webhook receiver (receiver.py)
and a TCP proxy that can cut connections (tcp_proxy.py). The fake answers the two model stand-ins
give are built in one place (answers.py)."""
