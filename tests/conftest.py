"""Shared test settings."""

import os

import torch

# Small networks run fastest on one thread, and one thread keeps timings stable on busy machines.
torch.set_num_threads(int(os.environ.get("BAYES_NEST_TEST_THREADS", "1")))


def pytest_report_header(config) -> str:
    """Name the floating-point setting the run uses (kernels and threads change last bits)."""
    return (
        f"torch {torch.__version__}: CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} thread(s)"
    )
