"""Shared test settings."""

import os

import torch

# Small networks run fastest on one thread, and one thread keeps timings stable on busy machines.
torch.set_num_threads(int(os.environ.get("BAYES_NEST_TEST_THREADS", "1")))
