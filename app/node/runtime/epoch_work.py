"""What a node's proofs claim, gathered per PoNW epoch: the applied training steps credited to an
epoch (sums, span, fastest measured cost per layer and micro-batch) and the inference steps it
served. EconomyService (economy.py) credits work here and signs one proof per epoch from it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EpochWork:
    """The steps credited to one epoch: their sums, span and fastest measured cost per layer."""

    batches: int = 0
    tokens: int = 0
    layers: int = 0
    role: str = "none"
    hash_before: str = ""
    hash_after: str = ""
    start_ms: int = 0
    end_ms: int = 0
    layer_us: int = 0
    steps: list[int] = field(default_factory=list)
    samples: list[Any] = field(default_factory=list)  # what the proof's work_root commits to

    def add(self, step: Any, start_ms: int, end_ms: int, samples: list[Any], claimed_steps: int = 1) -> None:
        first, last = step.layers
        layers = max(1, last - first)
        batches = max(1, int(step.batches))
        if not self.hash_before:
            self.hash_before, self.start_ms = step.hash_before, start_ms
        self.hash_after, self.end_ms = step.hash_after, end_ms
        self.batches += int(step.batches) * claimed_steps
        self.tokens += int(step.tokens) * claimed_steps
        self.samples.extend(samples)
        self.layers = max(self.layers, last - first)
        self.role = role_for_proof(step.role)
        # Rounded down, so batches x layers x layer_us never exceeds the measured time.
        cost_us = (end_ms - start_ms) * 1000 // (batches * claimed_steps * layers)
        self.layer_us = cost_us if not self.layer_us else min(self.layer_us, cost_us)
        self.steps.append(int(step.step))


@dataclass
class InferenceWork:
    """Inference steps served in one epoch (runtime/inference_service.py): generated tokens, the
    steps that carried them, the most layers held, their span and cheapest cost per layer-step."""

    tokens: int = 0
    steps: int = 0
    layers: int = 0
    start_ms: int = 0
    end_ms: int = 0
    layer_us: int = 0

    def add(self, tokens: int, layers: int, start_ms: int, end_ms: int) -> None:
        layers = max(1, layers)
        if not self.steps:
            self.start_ms = start_ms
        self.end_ms = end_ms
        self.tokens += tokens
        self.steps += 1
        self.layers = max(self.layers, layers)
        # rounded down, so steps x layers x layer_us never exceeds the spans: the proof's bound
        # (ponw.check_work: INFERENCE_TOKENS_PER_LAYER_STEP tokens per layer-step) then holds
        cost_us = (end_ms - start_ms) * 1000 // layers
        self.layer_us = cost_us if not self.layer_us else min(self.layer_us, cost_us)


def hash32(text: str) -> bytes:
    """Weight hashes arrive as hex of any length; proofs carry exactly 32 bytes."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = text.encode()
    return raw if len(raw) == 32 else hashlib.sha256(raw).digest()


def role_for_proof(role: str) -> str:
    # Proof records name one role; a solo node holding embedding and head is the driver.
    for candidate in ("driver", "validator", "worker"):
        if candidate in role:
            return candidate
    return "none"


