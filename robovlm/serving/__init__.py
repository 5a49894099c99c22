"""Inference for robots over the network: ``robovlm serve`` on Ray Serve (``deployment``, ``server``), the batched
stateless step (``stepper``, ``onnx_stepper``) and each replica's instruction cache (``prefix_cache``). The robot's
side is ``robovlm.runtime.remote_engine``; the wire format both speak is ``robovlm.runtime.wire``."""
