"""Helpers shared by the generators of this folder (onnx.helper graphs, seeded weights,
ONNX Runtime on one thread)."""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


class Graph:
    """Nodes and initializers under construction; names are unique by a counter."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes = []
        self.inits = []
        self.count = 0

    def node(self, op, inputs, name, outputs=1, **attrs):
        outs = [f"{name}.out{i}" if outputs > 1 else name for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs if outputs > 1 else outs[0]

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name=name))
        return name

    def weight(self, name, shape, scale):
        return self.init(name, (scale * self.rng.standard_normal(shape)).astype(np.float32))

    def constant(self, name, array):
        """A `Constant` node holding `array` (not an initializer)."""
        tensor = numpy_helper.from_array(np.asarray(array), name=name + ".value")
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=tensor))
        return name

    def model(self, name, inputs, outputs, opset):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", opset)],
            producer_name=f"dnnfusion models/families/{name}.py",
        )
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


def run_ort(path, feeds):
    """ONNX Runtime's outputs (CPU, one thread, every graph optimization on)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def save(out, name, model, feeds, input_f32):
    """Writes NAME.onnx, NAME.input.npy (float32) and NAME.output.npy (ORT's)."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}.onnx")
    onnx.save(model, path)
    (y,) = run_ort(path, feeds)
    np.save(os.path.join(out, f"{name}.input.npy"), np.ascontiguousarray(input_f32, dtype=np.float32))
    np.save(os.path.join(out, f"{name}.output.npy"), np.ascontiguousarray(y, dtype=np.float32))
    print(f"{name}: {os.path.getsize(path)} bytes, output {list(y.shape)}, max |y| {np.abs(y).max():.4g}")


f32 = TensorProto.FLOAT
i64 = TensorProto.INT64
