"""``mantle chat``: ask a Mantle cluster one question, after checking it.

    mantle chat URL --tls-cert CERT.pem [--pins DIR] [--root PEM]
                    [--tlog-key PATH] [--release-root PATH] [--release-dir DIR]
                    [--state PATH] [-m MODEL] [--api-key K] [--max-tokens N]
                    "prompt"

Nothing is sent before the checks of ``mantle verify`` passed (release and
ingress, against the user's pins); the answer then streams to standard
output as it is generated. The model defaults to the first the cluster
lists; the API key to ``$MANTLE_API_KEY`` (a key on the command line is
visible to other users of the machine). Exit status: 0 answered, 1 refused
or failed (the check or the API error is named, never the prompt or the
answer), 2 unusable input.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Final, TextIO

import anyio
import httpx2
import openai

from mantle._cli_trust import (
    EXIT_REFUSED,
    EXIT_UNUSABLE,
    EXIT_VERIFIED,
    CheckFailed,
    UnusableInput,
    add_trust_options,
    check_ingress,
)
from mantle.commands import IntegerIn, NumberIn

API_KEY_ENV: Final = "MANTLE_API_KEY"
MAX_TOKENS_LIMIT: Final = 8192
DEFAULT_MAX_TOKENS: Final = 256
MAX_TIMEOUT_S: Final = 600.0
DEFAULT_TIMEOUT_S: Final = 120.0


class ChatFailed(Exception):
    """The cluster did not answer (its API error, named by status and type)."""


async def _chat(args: argparse.Namespace, api_key: str, out: TextIO) -> str | None:
    """Check the ingress, then stream the answer to ``out``; its finish reason."""
    checked = await check_ingress(args, args.timeout)
    failure: str | None = None
    finish: str | None = None
    async with httpx2.AsyncClient(verify=checked.tls, timeout=args.timeout) as http:
        client = openai.AsyncOpenAI(
            base_url=checked.ingress.url.rstrip("/") + "/v1",
            api_key=api_key,
            http_client=http,
            max_retries=0,
        )
        try:
            model = args.model
            if model is None:
                listed = await client.models.list()
                if not listed.data:
                    failure = "the cluster lists no model"
                else:
                    model = listed.data[0].id
            if model is not None:
                stream = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": args.prompt}],
                    max_tokens=args.max_tokens,
                    stream=True,
                )
                async for chunk in stream:
                    for choice in chunk.choices:
                        # The user is the customer: showing their own answer is the point.
                        if choice.delta.content:
                            out.write(choice.delta.content)
                            out.flush()
                        finish = choice.finish_reason or finish
        except openai.APIStatusError as error:
            failure = f"HTTP {error.status_code} ({type(error).__name__})"
        except openai.APIError as error:
            failure = type(error).__name__
    if failure is not None:
        raise ChatFailed(failure)
    return finish


def _run(args: argparse.Namespace) -> int:
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    if not api_key:
        print(f"error: no API key: give --api-key or set ${API_KEY_ENV}", file=sys.stderr)
        return EXIT_UNUSABLE
    out: TextIO = sys.stdout
    try:
        finish = anyio.run(_chat, args, api_key, out, backend="trio")
    except UnusableInput as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNUSABLE
    except CheckFailed as failed:
        print(f"refused (check: {failed.check}) - {failed.detail}", file=sys.stderr)
        return EXIT_REFUSED
    except ChatFailed as failed:
        print(f"\nerror: the cluster did not answer: {failed}", file=sys.stderr)
        return EXIT_REFUSED
    out.write("\n")
    print(f"finish: {finish}", file=sys.stderr)
    return EXIT_VERIFIED


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``chat`` command to ``mantle``."""
    chat = subparsers.add_parser("chat", help="check a cluster, then stream an answer")
    add_trust_options(chat)
    chat.add_argument("prompt", help="the question")
    chat.add_argument("-m", "--model", default=None, help="model id (default: the first listed)")
    chat.add_argument(
        "--api-key", default=None, help=f"the tenant's API key (default ${API_KEY_ENV})"
    )
    chat.add_argument(
        "--max-tokens",
        type=IntegerIn(1, MAX_TOKENS_LIMIT),
        default=DEFAULT_MAX_TOKENS,
        help=f"tokens to generate at most (1-{MAX_TOKENS_LIMIT})",
    )
    chat.add_argument(
        "--timeout",
        type=NumberIn(1, MAX_TIMEOUT_S),
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for each answer (1-{MAX_TIMEOUT_S:g})",
    )
    chat.set_defaults(handler=_run)
