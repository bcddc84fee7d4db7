"""An OpenAI-style completions endpoint on 127.0.0.1, so existing clients can use the model.

Off by default (``[inference] openai_endpoint``); when on, the node serves on its own loop, bound
to the loopback interface only (nothing outside this computer can reach it):

- ``GET /v1/models``: the one model, named ``neurollm-v<architecture version>``;
- ``POST /v1/completions``: ``prompt`` (a string, or a list of one), ``max_tokens`` (default 16),
  ``temperature`` (default 1), ``top_p`` (default 1), ``stream`` (server-sent events, one chunk per
  piece of text, then ``data: [DONE]``). The answer has the API's shape: ``choices[0].text``,
  ``finish_reason`` ("stop" after the end-of-text token, else "length") and ``usage``.

Each request is one ``Generate`` of runtime/generation_service.py (on this node when it holds the
whole model, else through the network, paid from this node's wallet), one at a time. Bodies are
bounded (64 KiB) and every field is type- and range-checked; a bad request is 400 with the API's
error object, a network that cannot answer 503.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from app.node.events import Generate
from app.node.runtime.generation_service import MAX_TOKENS, GenerationService
from app.node.runtime.inference_client import GenerationFailed

log = logging.getLogger("neuroshard.openai")
HOST = "127.0.0.1"
MAX_BODY_BYTES = 64 * 1024
_ids = itertools.count(1)


class BadRequest(ValueError):
    pass


def _error(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": None}},
                             status=status)


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be a number between {lo} and {hi}")
    return float(value)


def parse_completion(body: Any) -> tuple[str, int, float, float, bool]:
    """(prompt, max_tokens, temperature, top_p, stream) of a completions request, checked."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string (or a list of one string)")
    max_tokens = body.get("max_tokens", 16)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise BadRequest(f"max_tokens must be an integer between 1 and {MAX_TOKENS}")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 1e-6, 1.0)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    if body.get("n", 1) != 1:
        raise BadRequest("only n = 1 is served")
    return prompt, max_tokens, temperature, top_p, stream


class OpenAIEndpoint:
    def __init__(self, service: Callable[[], GenerationService], model_name: Callable[[], str],
                 port: int) -> None:
        """``service()``: the generation service of the node as it is now; ``model_name()``: what
        the API calls the model; ``port`` on 127.0.0.1 (0: any free one, see ``port`` after start)."""
        self._service, self._model_name, self._wanted_port = service, model_name, port
        self._runner: web.AppRunner | None = None
        self._one_at_a_time = asyncio.Lock()
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self._wanted_port).start()
        self.port = int(self._runner.addresses[0][1])
        log.info("OpenAI-style completions endpoint on http://%s:%d/v1", HOST, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self._model_name(), "object": "model", "created": 0, "owned_by": "neuroshard"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        try:
            prompt, max_tokens, temperature, top_p, stream = parse_completion(await request.json())
        except (BadRequest, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, str(exc) or "the body is not JSON", "invalid_request_error")
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is larger than {MAX_BODY_BYTES} bytes", "invalid_request_error")
        completion_id, created = f"cmpl-{next(_ids)}-{int(time.time())}", int(time.time())
        command = Generate(prompt=prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                           request_id=completion_id)
        if not stream:
            async with self._one_at_a_time:
                try:
                    result = await self._service().generate(command)
                except (GenerationFailed, ValueError) as exc:
                    return _failure(exc)
            return web.json_response(self._body(completion_id, created, result["text"], result))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        async def run() -> dict[str, Any]:
            try:
                return await self._service().generate(command, on_text=pieces.put_nowait)
            finally:
                pieces.put_nowait(None)

        async with self._one_at_a_time:
            task = asyncio.ensure_future(run())
            while (piece := await pieces.get()) is not None:
                await _event(response, self._chunk(completion_id, created, piece, None))
            try:
                result = await task
            except (GenerationFailed, ValueError) as exc:
                await _event(response, {"error": {"message": str(exc), "type": "server_error"}})
            else:
                await _event(response, self._chunk(completion_id, created, "", _finish(result)))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _chunk(self, completion_id: str, created: int, text: str, finish: str | None) -> dict[str, Any]:
        return {"id": completion_id, "object": "text_completion", "created": created, "model": self._model_name(),
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    def _body(self, completion_id: str, created: int, text: str, result: dict[str, Any]) -> dict[str, Any]:
        body = self._chunk(completion_id, created, text, _finish(result))
        prompt_tokens, tokens = int(result.get("prompt_tokens", 0)), int(result["tokens"])
        body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                         "total_tokens": prompt_tokens + tokens}
        body["neuroshard"] = {"where": result["where"], "cost_units": result["cost_units"]}
        return body


def _finish(result: dict[str, Any]) -> str:
    return "stop" if result.get("stopped") else "length"


def _failure(exc: Exception) -> web.Response:
    if isinstance(exc, GenerationFailed):
        return _error(503, str(exc), "server_error")
    return _error(400, str(exc), "invalid_request_error")


async def _event(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(payload)}\n\n".encode())
