"""The training keys that change how a job runs, not what it computes (imports no other diffcomp module).

They are left out of a run's fingerprint. ``diffcomp.config`` and ``diffcomp.training`` re-export them.
"""

from __future__ import annotations

# compile, fused_optimizer, channels_last and cuda_graph (the last three only on CUDA) pick other kernels for the
# same arithmetic: equal up to floating-point rounding, not bit-identical (cuda_graph: the capturable AdamW; on a
# CPU it is bit-identical). precision and tf32 change the arithmetic itself and are part of the fingerprint.
RUNTIME_KEYS = (
    "log_every",
    "device",
    "compile",
    "threads",
    "stop_margin_seconds",
    "keep_resume_states",
    "fused_optimizer",
    "channels_last",
    "cuda_graph",
)
