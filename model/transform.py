"""Maps raw values (minutes watched, ratings) to the Gaussian scale and back.

Minutes watched are heavy-tailed, so the model can work on ``log1p(minutes)``;
ratings are modelled as they are. Predictive moments are converted back to the
original units exactly (log-normal moments for log1p).

>>> import numpy as np
>>> forward("log1p", np.array([0.0, np.e - 1]))
array([0., 1.])
>>> mean, std = to_original_units("identity", np.array([3.0]), np.array([0.5]))
>>> float(mean[0]), float(std[0])
(3.0, 0.5)
"""

from __future__ import annotations

import numpy as np

TRANSFORMS = ("identity", "log1p")


def _check(name: str) -> None:
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose one of: {', '.join(TRANSFORMS)}")


def forward(name: str, values: np.ndarray) -> np.ndarray:
    """Raw values to the scale the Gaussian likelihood lives on."""
    _check(name)
    if name == "log1p":
        return np.log1p(values)
    return np.asarray(values, dtype=np.float64)


def to_original_units(
    name: str, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and standard deviation in raw units.

    For log1p, y = log1p(x) ~ N(m, s^2) means x + 1 is log-normal, so
    E[x] = exp(m + s^2/2) - 1 and Var[x] = (exp(s^2) - 1) exp(2m + s^2).
    """
    _check(name)
    if name == "log1p":
        var = np.square(std)
        m = np.exp(mean + var / 2.0) - 1.0
        s = np.sqrt(np.expm1(var) * np.exp(2.0 * mean + var))
        return m, s
    return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
