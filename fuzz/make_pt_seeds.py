"""Writes the mtcnn_pt seeds: tiny PyTorch files in the zip format `torch.save` writes
(`<name>/data.pkl`, a pickle whose tensors are `torch._utils._rebuild_tensor_v2` calls on
storages named by persistent ids, `<name>/data/<key>` their bytes, `<name>/version`), made
without PyTorch: a state dict shaped like one layer of P-Net, and an empty one."""
import collections
import io
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "seeds" / "mtcnn_pt")
out.mkdir(parents=True, exist_ok=True)

# Stand-ins that pickle under torch's names.
torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils


def _rebuild_tensor_v2(*args):
    raise RuntimeError("only pickled, never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage


class Storage:
    def __init__(self, key, values):
        self.key, self.values = key, values


class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape

    def __reduce__(self):
        stride, s = [], 1
        for d in reversed(self.shape):
            stride.insert(0, s)
            s *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False,
                                     collections.OrderedDict()))


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        return None


def write(name, state):
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(out / name, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        for t in state.values():
            z.writestr(f"archive/data/{t.storage.key}", struct.pack(f"<{len(t.storage.values)}f", *t.storage.values))
        z.writestr("archive/version", "3\n")


w = Storage("0", [0.01 * i for i in range(10 * 3 * 3 * 3)])
b = Storage("1", [0.0] * 10)
a = Storage("2", [0.25] * 10)
write("pnet-conv1", collections.OrderedDict([
    ("conv1.weight", Tensor(w, [10, 3, 3, 3])),
    ("conv1.bias", Tensor(b, [10])),
    ("prelu1.weight", Tensor(a, [10])),
]))
write("empty", collections.OrderedDict())
