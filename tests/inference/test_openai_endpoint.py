"""The optional OpenAI-style completions endpoint: on 127.0.0.1 only, the API's request and answer
shapes, streamed chunks that add up to the whole text, and the model's own greedy tokens (a node
holding the whole tiny model, so the text equals in-process generation)."""

from __future__ import annotations

import json

import aiohttp

from app.node.model.generation import generate
from app.node.runtime.generation_service import GenerationService, NodeView
from app.node.runtime.openai_endpoint import HOST, OpenAIEndpoint
from app.node.tokenizer import NeuroTokenizer
from app.node.training.config import TrainingConfig
from app.node.training.stage import StageWorker, build_shard
from tests.inference.helpers import ARCH
from tests.p2p.helpers import run

TOKENIZER = NeuroTokenizer.genesis()


def test_completions_answer_and_stream_the_models_greedy_text() -> None:
    stage = StageWorker(build_shard(ARCH, (0, ARCH.layers), with_embedding=True, with_head=True, seed=5),
                        TrainingConfig())
    service = GenerationService(NodeView(architecture=lambda: ARCH, tokenizer=lambda: TOKENIZER, stage=lambda: stage,
                                         sync=lambda: None, p2p=lambda: None, economy=lambda: None,
                                         emit=lambda _e: None))
    expected = TOKENIZER.decode(generate([stage.shard], TOKENIZER.encode("Once upon"), 8, temperature=0,
                                         eos_id=TOKENIZER.eos_id))

    async def scenario() -> None:
        endpoint = OpenAIEndpoint(lambda: service, lambda: "neurollm-v1", 0)
        await endpoint.start()
        base = f"http://{HOST}:{endpoint.port}/v1"
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/models") as reply:
                    assert (await reply.json())["data"][0]["id"] == "neurollm-v1"
                request = {"model": "neurollm-v1", "prompt": "Once upon", "max_tokens": 8, "temperature": 0}
                async with http.post(f"{base}/completions", json=request) as reply:
                    assert reply.status == 200
                    body = await reply.json()
                choice = body["choices"][0]
                assert body["object"] == "text_completion" and choice["text"] == expected
                assert choice["finish_reason"] in ("length", "stop")
                usage = body["usage"]
                assert usage["prompt_tokens"] == len(TOKENIZER.encode("Once upon"))
                assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
                assert body["neuroshard"] == {"where": "this computer", "cost_units": 0}

                async with http.post(f"{base}/completions", json={**request, "stream": True}) as reply:
                    assert reply.headers["Content-Type"].startswith("text/event-stream")
                    lines = [line.decode().strip() async for line in reply.content if line.strip()]
                assert lines[-1] == "data: [DONE]"
                chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
                assert len(chunks) >= 2 and "".join(c["choices"][0]["text"] for c in chunks) == expected
                assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")

                for bad in ({"prompt": 5}, {"prompt": "x", "max_tokens": 0}, {"prompt": "x", "temperature": "hot"},
                            {"prompt": "x", "n": 2}):
                    async with http.post(f"{base}/completions", json=bad) as reply:
                        assert reply.status == 400
                        assert (await reply.json())["error"]["type"] == "invalid_request_error"
                async with http.post(f"{base}/completions", data=b"x" * (70 * 1024)) as reply:
                    assert reply.status == 413
        finally:
            await endpoint.stop()

    run(scenario(), timeout=120)


def test_a_node_with_the_endpoint_turned_on_serves_completions(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The real engine and runtime of a lone node with ``[inference] openai_endpoint``: the endpoint
    comes up after the node joined, answers from the node's own model, and goes with the node."""
    import socket
    import threading
    import time as clock

    import torch

    from app.node import hardware, identity
    from app.node.config import NodeConfig
    from app.node.engine import NodeEngine
    from app.node.events import NodeState, StatusChanged
    from app.node.inference_limits import InferenceLimits
    from app.wallet.keystore import Keystore

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with socket.socket() as probe:  # a free loopback port for the endpoint
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    data_dir = tmp_path / "node"
    data_dir.mkdir()
    hardware.save_cache(data_dir, hardware.HardwareReport(hardware.detect_device("cpu"), 300.0,
                                                          hardware.tier_for_ms(300.0), torch.__version__, clock.time()))
    config = NodeConfig(data_dir=data_dir, device="cpu", host=HOST, port=0, devnet=True, training={"model": "tiny"},
                        economics={"preset": "devnet"},
                        inference=InferenceLimits(openai_endpoint=True, openai_port=port))
    Keystore(data_dir, use_keyring=False, scrypt_n=2**10).create("pw")  # never the OS keyring in tests
    identity.provide_password(data_dir, "pw")
    engine = NodeEngine(config)
    training = threading.Event()
    engine.subscribe(lambda e: training.set() if isinstance(e, StatusChanged) and e.state == NodeState.TRAINING
                     else None)

    async def ask() -> dict:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://{HOST}:{port}/v1/completions",
                json={"prompt": "hello", "max_tokens": 4, "temperature": 0}) as reply:
            assert reply.status == 200
            return await reply.json()

    engine.start()
    try:
        assert training.wait(120), "the node did not start training"
        body = run(ask(), timeout=60)
        assert body["usage"]["completion_tokens"] == 4 or body["choices"][0]["finish_reason"] == "stop"
        assert body["neuroshard"] == {"where": "this computer", "cost_units": 0}
        assert body["model"] == "neurollm-v1"
    finally:
        identity.forget_password(data_dir)
        assert engine.stop(timeout=30)

    async def gone() -> bool:
        try:
            await ask()
        except aiohttp.ClientConnectionError:
            return True
        return False

    assert run(gone(), timeout=30)
