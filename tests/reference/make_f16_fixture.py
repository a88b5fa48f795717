#!/usr/bin/python3
"""Writes tests/fixtures/model/f16.json: float32 values (as bit patterns) and
their IEEE binary16 roundings by numpy (round to nearest even, overflow to
infinity, subnormals), the reference for cmr_float_to_half (test_model).

    /usr/bin/python3 tests/reference/make_f16_fixture.py
"""
import json
import os

import numpy as np

rng = np.random.default_rng(16)
special = np.array([0.0, -0.0, 1.0, -1.0, 65504.0, 65519.99, 65520.0, 1e6, -1e6, np.inf, -np.inf,
                    2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0000001, 2.0 ** -26, 3 * 2.0 ** -25,
                    2.0 ** -14 - 2.0 ** -25, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -11 + 2.0 ** -20,
                    0.1, 1 / 3, 1e-8, 6e-8, 6.1e-5],
                   dtype=np.float32)
# Weights-like values over many scales, and halfway cases built exactly.
scales = rng.normal(size=400).astype(np.float32) * np.float32(10.0) ** rng.integers(-9, 5, size=400).astype(np.float32)
halves = (rng.integers(1, 2047, size=100) * 2 + 1).astype(np.float32) * np.float32(2.0 ** -12)
values = np.concatenate([special, scales.astype(np.float32), halves, -halves])
with np.errstate(over="ignore"):
    half = values.astype(np.float16)
out = {"float_bits": [int(b) for b in values.view(np.uint32)], "half_bits": [int(b) for b in half.view(np.uint16)]}
path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "model", "f16.json")
with open(path, "w") as f:
    json.dump(out, f)
print(path, len(values), "values")
