"""CUDA-event timing shared by the bench/ scripts that time single operations (gemm_shapes, attention_shapes)."""
import statistics

import torch


def time_ms(fn, iters=10, warmup=3):
    """Median milliseconds of `fn()` over `iters` calls after `warmup`, by CUDA events around each call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)
