#!/usr/bin/env python3
"""The Python binding's speed against the Rust benchmark, in one run.

    python bench/python.py                    # needs the wheel installed (README, Python)
    python bench/python.py --ort              # also ONNX Runtime from Python (onnxruntime, onnx, h5py)

Rows: embed-only at batch 32 through `facenet.FaceNet.embed` (aligned 160x160 uint8 crops in,
unit embeddings out: standardization, the network, the copy back to numpy) against
`facenet bench embed --batch 32` (the forward pass on a ready tensor) run right before, as the
binding's overhead; end to end (`FaceNet.faces`: decode, detect, align, embed) over the sample
`val/` photos; and with --ort, shared/bench/ort_facenet.py at batch 32 on the same machine.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import facenet

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("FACENET_HOME", Path.home() / ".cache" / "facenet"))


def rate(fn, n_items, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n_items / statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default=str(ROOT / "target" / "release" / "facenet"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ort", action="store_true")
    args = ap.parse_args()

    net = facenet.FaceNet()
    val = sorted(p for d in (CACHE / "5-celebrity-faces-dataset" / "val").iterdir() for p in d.iterdir())
    crops = [f.crop for p in val for f in net.faces(p)[:1]]
    batch = np.stack((crops * 2)[:32])

    out = subprocess.run([args.cli, "bench", "embed", "--batch", "32"], check=True, capture_output=True, text=True).stdout
    cli = float(re.search(r"img_per_s=([0-9.]+)", out).group(1))
    py = rate(lambda: net.embed(batch), 32, args.repeats)
    arrays = [facenet.load_image(p) for p in val]
    e2e = rate(lambda: [net.faces(a) for a in arrays], len(arrays), max(2, args.repeats // 2))

    rows = [
        ("facenet bench embed, batch 32 (Rust, forward pass)", cli, ""),
        ("FaceNet.embed, batch 32 (Python, crops in, embeddings out)", py, f"overhead {100 * (cli / py - 1):+.1f} %"),
        ("FaceNet.faces per photo (Python, decode+detect+align+embed)", e2e, "images/s"),
    ]
    if args.ort:
        h5 = CACHE / "facenet_keras.h5"
        script = ROOT.parent / "shared" / "bench" / "ort_facenet.py"
        o = subprocess.run([sys.executable, str(script), "--h5", str(h5), "--bench", "--batch", "32"],
                           check=True, capture_output=True, text=True).stdout
        m = re.search(r"img_per_s=([0-9.]+)", o) or re.search(r"([0-9.]+)\s*img/s", o)
        if m:
            ort = float(m.group(1))
            rows.append(("ONNX Runtime from Python, batch 32 (forward pass)", ort, f"FaceNet.embed / ORT = {py / ort:.2f}x"))
        else:
            print(o)
    print(f"{'what':<62} {'img/s':>8}  note")
    for what, r, note in rows:
        print(f"{what:<62} {r:>8.1f}  {note}")


if __name__ == "__main__":
    main()
