"""Writes the keras_h5 seeds: tiny files laid out as Keras 2's `model.save` lays them out
(root attributes `keras_version` and `model_config`, group `model_weights` with `layer_names`,
each layer group with `weight_names` and its datasets), one contiguous, one chunked and
compressed, one with a layer without weights. Needs h5py and numpy (PyPI)."""
import json
import sys
from pathlib import Path

import h5py
import numpy as np

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "seeds" / "keras_h5")
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)


def write(name, chunked=False, empty_layer=False):
    with h5py.File(out / name, "w") as f:
        f.attrs["keras_version"] = b"2.2.4"
        f.attrs["model_config"] = json.dumps({"class_name": "Model", "config": {"name": "tiny"}}).encode()
        w = f.create_group("model_weights")
        layers = [b"Conv2d_1a_3x3", b"Bottleneck"]
        if empty_layer:
            layers.insert(1, b"input_1")
        w.attrs["layer_names"] = np.array(layers)
        kw = dict(chunks=True, compression="gzip") if chunked else {}
        conv = w.create_group("Conv2d_1a_3x3")
        conv.attrs["weight_names"] = np.array([b"Conv2d_1a_3x3/kernel:0"])
        conv.create_dataset("Conv2d_1a_3x3/kernel:0", data=rng.standard_normal((3, 3, 3, 2)).astype("f4"), **kw)
        if empty_layer:
            w.create_group("input_1").attrs["weight_names"] = np.zeros((0,), dtype="f4")
        bn = w.create_group("Bottleneck")
        bn.attrs["weight_names"] = np.array([b"Bottleneck/kernel:0", b"Bottleneck/bias:0"])
        bn.create_dataset("Bottleneck/kernel:0", data=rng.standard_normal((4, 2)).astype("f4"), **kw)
        bn.create_dataset("Bottleneck/bias:0", data=np.zeros(2, dtype="f4"), **kw)


write("contiguous")
write("chunked-gzip", chunked=True)
write("layer-without-weights", empty_layer=True)
