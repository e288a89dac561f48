"""``make demo``: a local attested cluster serves a real model to a client that checks it first.

1. **The cluster** (:class:`nodes.devcluster.DevCluster`, what ``mantle-node dev``
   runs): a release signed by 2 of 3 release signers and appended to a
   transparency log; a keys node, an ingress node and two inference nodes,
   each its own ``mantle-node run`` process on a simulated NitroTPM, each
   through measured boot; the model provider's data key imported into the
   keys node over a channel on which it proved its attestation; each
   inference node obtaining that key over the wire with a fresh document,
   decrypting the weights in memory and joining the ingress's scheduler over
   a mutually attested node link.
2. **The client** checks before it asks, with pins it loads itself (never
   from the bundle it verifies): the release's signatures against the pinned
   release root, its inclusion in the log under the pinned log key, its
   floor against the client's own trust state; then the ingress's document
   over the client's own fresh nonce: chain to the pinned attestation root,
   the PCRs of that release (node image and Mantle's registers), and the
   binding of the TLS key of the certificate the client pins
   (:func:`mantle.verify_ingress`).
3. **The question** goes through the official ``openai`` SDK over that pinned
   TLS connection; the answer streams back through the scheduler from an
   inference node. Then every process is stopped.

This module only wires and tells; everything it shows is done by
:mod:`nodes.devcluster` and :mod:`mantle`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import anyio
import httpx2
import openai

from mantle import (
    IngressRefused,
    ReleaseDirectory,
    VerifiedIngress,
    client_release_view,
    load_pins,
    pinned_tls_context,
    verify_ingress,
)
from mantle.commands import IntegerIn
from mantle.trust_state import TrustStateFile
from nodes.clock import TrioClock
from nodes.devcluster import ClusterLayout, DevCluster, DevClusterError, DevClusterSettings
from nodes.random import SystemRandom
from protocol.attestation import AttestationError
from protocol.measurement import APPLICATION_PCRS, PLATFORM_PCRS

DEFAULT_PROMPT = "In two sentences, why should an AI service never let its operators read prompts?"


def _describe(verified: VerifiedIngress) -> list[str]:
    release = verified.release
    document = verified.attestation
    root = (
        "a SIMULATED attestation root created for this run (not AWS hardware)"
        if verified.simulated
        else "AWS's Nitro attestation root"
    )
    registers = " ".join(
        f"PCR{index}={document.pcrs[index].hex()[:12]}…"
        for index in (*PLATFORM_PCRS, *APPLICATION_PCRS)
    )
    return [
        f"[client] release v{release.version} verified: signed by the pinned release root's "
        "threshold, in the transparency log under the pinned log key, "
        f"floor v{release.min_version}",
        f"[client] ingress {document.module_id} attested: chain to {root}, this client's fresh "
        f"nonce, PCRs of release v{release.version}",
        f"[client]   {registers}",
        "[client]   TLS key bound into the document: SPKI sha256 "
        f"{verified.tls_spki_sha256.hex()[:16]}…",
    ]


async def run_demo(
    prompt: str, say: TextIO, *, model: Path | None, max_tokens: int, inference_nodes: int = 2
) -> None:
    started = time.monotonic()
    say.write(
        f"[cluster] starting a keys node, an ingress node and {inference_nodes} inference nodes "
        "on simulated NitroTPMs (separate processes)\n"
    )
    settings = DevClusterSettings(port=0, model=model, inference_nodes=inference_nodes)
    async with DevCluster(settings) as cluster:
        endpoints = cluster.endpoints
        say.write(
            f"[cluster] serving at {endpoints.url} after {time.monotonic() - started:.1f} s "
            f"(logs and state under {cluster.data_dir})\n"
        )
        layout = ClusterLayout(cluster.data_dir)
        # The client's own trust: the pins directory and its own trust state.
        pins = load_pins(layout.pins_dir)
        release = client_release_view(
            ReleaseDirectory(layout.release_dir),
            pins,
            datetime.now(UTC),
            TrustStateFile(layout.client_state),
        )
        cert_pem = endpoints.tls_cert.read_bytes()
        async with httpx2.AsyncClient(verify=pinned_tls_context(cert_pem), timeout=120.0) as http:
            verified = await verify_ingress(
                http,
                endpoints.url,
                pins=pins,
                release=release,
                tls_cert_pem=cert_pem,
                random=SystemRandom(),
                clock=TrioClock(),
            )
            for line in _describe(verified):
                say.write(line + "\n")
            client = openai.AsyncOpenAI(
                base_url=endpoints.url + "/v1", api_key=endpoints.api_key, http_client=http
            )
            models = await client.models.list()
            model_id = models.data[0].id
            say.write(f"[client] model {model_id}\n[client] prompt: {prompt}\n[client] answer: ")
            stream = await client.chat.completions.create(
                model=model_id,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=0.0,
                stream=True,
                stream_options={"include_usage": True},
            )
            finish, usage = None, None
            async for chunk in stream:
                for choice in chunk.choices:
                    # The client is the customer: showing its own answer is the point.
                    if choice.delta.content:
                        say.write(choice.delta.content)
                        say.flush()
                    finish = choice.finish_reason or finish
                usage = chunk.usage or usage
            tokens = (
                f", {usage.prompt_tokens} prompt + {usage.completion_tokens} completion tokens"
                if usage is not None
                else ""
            )
            say.write(f"\n[client] done: {finish}{tokens}\n")
    say.write("[cluster] every node stopped\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nodes.demo",
        description="A local attested cluster serving a real model, checked by the client first.",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="the question to ask")
    parser.add_argument(
        "--model", type=Path, default=None, help="a GGUF file (default: the demo model)"
    )
    parser.add_argument(
        "--max-tokens", type=IntegerIn(1, 8192), default=96, help="tokens to generate (1-8192)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        anyio.run(
            lambda: run_demo(args.prompt, sys.stdout, model=args.model, max_tokens=args.max_tokens),
            backend="trio",
        )
    except (DevClusterError, AttestationError, IngressRefused, openai.APIError) as error:
        # Each names what failed; none quotes the prompt or the answer.
        sys.stdout.write(f"\n[demo] failed: {type(error).__name__}: {error}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
