"""NeuroLLM, the model the network trains: pure PyTorch, no I/O beyond checkpoints, no network.

Read in this order: ``architecture`` (shapes and the memory scaler; imports no torch, so the
``arch`` command stays fast), ``layers`` (RMSNorm, RoPE, GQA attention, SwiGLU, blocks,
embedding and head), ``shard`` (a pipeline stage or the whole model), ``growth``
(function-preserving depth, width and vocabulary growth, and the Arbor trigger),
``checkpoint`` (atomic safetensors files), ``generation`` (KV-cached sampling through
stages). Device, precision, compile and activation checkpointing are applied from outside by
app/node/training/speed.py. Nothing is imported here on purpose.
"""
