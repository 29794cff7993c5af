#!/usr/bin/env bash
# The GPU checks, as one script for a machine with an NVIDIA GPU (the device machine): real NVML
# inventory and metrics through runtime.gpus; a block instance given GPU 0 (bench/runtime_gpu_check.py);
# then a real `aiosd run` daemon (process driver) that applies examples/gpu-matmul, places it on a GPU
# with the gpu allocator, and answers inferences computed on that GPU; finally the runtime tests with
# real NVML present. Writes what it saw under $OUT (or ./device-out).
#
# Usage (repo root, python3 with torch): [WHEELS=.whl] bash bench/device_check.sh
set -u
OUT=${OUT:-$PWD/device-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d "${WHEELS:-.whl}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${WHEELS:-.whl}"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
step() { printf '\n==> %s (%s)\n' "$*" "$(date +%T)"; }

step "nvidia-smi"
nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
python3 -c 'import torch, pynvml; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

step "baseline: the same products in plain torch, no aiosd (same run)"
python3 - <<'PY' | tee "$OUT/baseline.json"
import json, time, torch
d = torch.device("cuda", 0)
out = {}
for n, dt, rep in ((8192, torch.bfloat16, 20), (4096, torch.float32, 10)):
    g = torch.Generator(device=d).manual_seed(1234)
    a = torch.randn(n, n, device=d, dtype=dt, generator=g); b = torch.randn(n, n, device=d, dtype=dt, generator=g)
    c = a @ b; torch.cuda.synchronize(d)
    t0 = time.perf_counter()
    for _ in range(rep):
        c = a @ b
    torch.cuda.synchronize(d)
    per = (time.perf_counter() - t0) / rep
    out[f"{n}_{str(dt).split('.')[-1]}"] = {"seconds_per_product": per, "tflops": 2 * n ** 3 / per / 1e12}
print(json.dumps(out))
PY

step "runtime_gpu_check.py"
timeout 180 python3 bench/runtime_gpu_check.py | tee "$OUT/runtime_gpu.json"

step "a real daemon (process driver) serving examples/gpu-matmul"
D=$(mktemp -d /tmp/aiosd-dev.XXXX); S=$D/aiosd.sock
a() { timeout 120 python3 -m aiosd.cli "$@" --socket "$S" --data-dir "$D/data"; }
AIOSD_RUNTIME_DRIVER=process python3 -m aiosd.cli run --data-dir "$D/data" --socket "$S" \
  --p2p-host 127.0.0.1 --p2p-port 0 >"$OUT/daemon.log" 2>&1 &
DPID=$!
for _ in $(seq 200); do a status >/dev/null 2>&1 && break; sleep 0.1; done
a status
a gpus --json | tee "$OUT/gpus.json"
python3 - "$PWD/examples/gpu-matmul" >"$D/block.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1] + "/block.json"))
doc["body"]["spec"]["values"]["blockInitData"]["blockDir"] = sys.argv[1]
print(json.dumps(doc))
PY
t0=$(date +%s.%N)
a apply -f examples/gpu-matmul/component.json -f "$D/block.json"
a infer gpu-matmul-1 --data '{"n": 8192, "dtype": "bfloat16", "repeat": 20}' --json | tee "$OUT/infer_bf16.json"
echo "apply -> first answer: $(python3 -c "import time; print(round(time.time() - $t0, 2))") s"
a infer gpu-matmul-1 --data '{"n": 4096, "dtype": "float32", "repeat": 10}' --json | tee "$OUT/infer_fp32.json"
a infer gpu-matmul-1 --data '{"n": 10}' ; echo "(bad input above must be refused: rc=$?)"
step "the same block placed by the cluster controller (apply --cluster), sharing GPU 0 by memory"
sed 's/"gpu-matmul-1"/"gpu-matmul-2"/' "$D/block.json" >"$D/block2.json"
a apply --cluster -f "$D/block2.json"
for _ in $(seq 40); do a infer gpu-matmul-2 --data '{"n": 2048}' --json >"$OUT/infer_cluster.json" 2>&1 && break; sleep 0.5; done
cat "$OUT/infer_cluster.json"
a ps; a gpus
step "a block that wants its GPU alone is refused while others hold it (both paths)"
python3 - "$D/block.json" >"$D/block3.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
v = doc["body"]["spec"]["values"]
v["blockId"] = "gpu-matmul-3"
v["policyRulesSpec"][0]["values"]["parameters"]["exclusive_gpus"] = True
print(json.dumps(doc))
PY
a apply -f "$D/block3.json"; echo "(local apply refused above: rc=$?)"
a apply --cluster -f "$D/block3.json"; echo "(cluster apply refused above: rc=$?)"
a get metrics --json > "$OUT/metrics.json" 2>&1; head -c 1500 "$OUT/metrics.json"; echo
a delete block gpu-matmul-1; a delete block gpu-matmul-2
sleep 2; a ps
kill -TERM $DPID; wait $DPID; echo "daemon exit: $?"
tail -n 30 "$OUT/daemon.log"

step "runtime tests with real NVML present"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/unit/test_runtime_gpus.py tests/unit/test_runtime_metrics.py tests/integration/test_runtime_gpus.py tests/unit/test_runtime_exports.py 2>&1 | tail -n 25
step "done"
