"""Rational-ratio resampling of audio, shared by the audio folder, the synthetic set and the speech set.

A polyphase filter (``scipy.signal.resample_poly``): the exact ratio ``target / orig`` reduced by
their greatest common divisor, with scipy's Kaiser-windowed anti-aliasing FIR.
"""

from __future__ import annotations

from math import gcd

import numpy as np

__all__ = ["resample"]


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling of ``(C, T)`` from ``orig_rate`` to ``target_rate`` Hz, float32."""
    if orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"resample: rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly  # lazy: scipy.signal takes ~0.3 s to import

    common = gcd(int(orig_rate), int(target_rate))
    out = resample_poly(audio, int(target_rate) // common, int(orig_rate) // common, axis=-1)
    return out.astype(np.float32)
