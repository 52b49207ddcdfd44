"""Root pytest configuration, loaded before any test or doctest module imports torch."""

import os

# The model's tensors are tiny; torch's intra-op threads only add contention on
# a small shared machine (5x slower per minibatch measured on 2 cores). Set
# here, before any test or doctest imports torch, so no test needs a fixture.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
