"""gpu-matmul block: multiplies two random n×n matrices on the GPU it was given and reports what it saw.

Written exactly as an AIOS block; only the import line differs (`from aios_instance import ...`).
Input `data`: {"n": 4096, "dtype": "bfloat16"|"float32"|"float16", "repeat": 10}. Output: the device
name, CUDA_VISIBLE_DEVICES, the GPUs aiosd allocated, time per product, TFLOP/s, and the largest
difference from a float64 CPU product of the first 64 rows (a correctness check, not a benchmark).
"""

import json
import os
import time

from sdk import Block, OnDataResult, PreProcessResult

DTYPES = ("bfloat16", "float16", "float32")


class GpuMatmulBlock:
    def __init__(self, context):
        import torch

        self.torch = torch
        self.context = context
        self.gpus = list(context.allocation_info["gpus"])
        if not torch.cuda.is_available():
            raise RuntimeError(f"torch sees no CUDA device (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        self.device = torch.device("cuda", 0)  # the first GPU this instance was given
        self.served = 0

    def on_preprocess(self, packet):
        try:
            data = json.loads(packet.data) if packet.data else {}
        except ValueError as e:
            return False, "data is not JSON: " + str(e)
        if not isinstance(data, dict):
            return False, "data must be a JSON object"
        n, dtype, repeat = data.get("n", 4096), data.get("dtype", "bfloat16"), data.get("repeat", 10)
        if not isinstance(n, int) or not 64 <= n <= 16384:
            return False, "data.n must be an integer 64..16384"
        if dtype not in DTYPES:
            return False, "data.dtype must be one of " + ", ".join(DTYPES)
        if not isinstance(repeat, int) or not 1 <= repeat <= 100:
            return False, "data.repeat must be an integer 1..100"
        return True, [PreProcessResult(packet=packet, extra_data={"n": n, "dtype": dtype, "repeat": repeat})]

    def on_data(self, preprocessed_entry):
        torch = self.torch
        x = preprocessed_entry.extra_data
        n, repeat, dt = x["n"], x["repeat"], getattr(torch, x["dtype"])
        g = torch.Generator(device=self.device).manual_seed(1234)
        a = torch.randn(n, n, device=self.device, dtype=dt, generator=g)
        b = torch.randn(n, n, device=self.device, dtype=dt, generator=g)
        c = a @ b  # warm-up (cuBLAS handles, clocks)
        torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        for _ in range(repeat):
            c = a @ b
        torch.cuda.synchronize(self.device)
        per = (time.perf_counter() - t0) / repeat
        ref = a[:64].double().cpu() @ b.double().cpu()
        err = (c[:64].double().cpu() - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
        self.served += 1
        return True, OnDataResult(output={
            "device": torch.cuda.get_device_name(self.device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "allocated_gpus": self.gpus,
            "n": n, "dtype": x["dtype"], "seconds_per_product": per,
            "tflops": 2 * n ** 3 / per / 1e12, "max_rel_error_vs_cpu": err,
            "instance_id": self.context.instance_id,
        })

    def on_update(self, updated_parameters):
        return True, updated_parameters

    def health(self):
        free, total = self.torch.cuda.mem_get_info(self.device)
        return {"status": "healthy", "served": self.served, "gpu_free_mb": free // 2**20, "gpu_total_mb": total // 2**20}

    def management(self, action, data):
        if action == "empty_cache":
            self.torch.cuda.empty_cache()
            return {"status": "success"}
        return {"status": "error", "message": "unknown action " + action}

    def get_muxer(self):
        return None


if __name__ == "__main__":
    Block(GpuMatmulBlock).run()
