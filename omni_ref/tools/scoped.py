"""Global torch settings a tool needs for its run, put back afterwards.

A function such as `bench.run` seeds torch's global generator and turns on deterministic algorithms so that its
runs repeat; called from a notebook or a test, it must not leave them changed for the code that runs next.
"""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_state_kept():
    """Run the block (or, as a decorator, the function), then restore torch's global random state and its
    deterministic-algorithms setting to what they were before."""
    rng = torch.random.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        yield
    finally:
        torch.random.set_rng_state(rng)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
