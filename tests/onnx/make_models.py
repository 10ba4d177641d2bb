"""Writes the small .onnx files of tests/onnx_refusals.rs, one refusal each.

    python3 -m venv /tmp/onnxvenv && /tmp/onnxvenv/bin/pip install onnx==1.23.2 numpy==2.4.6
    /tmp/onnxvenv/bin/python tests/onnx/make_models.py

Each file is a few hundred bytes; they are committed, so the tests need no Python.
"""

import math
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))


def save(name, nodes, inputs, outputs, opset=17, initializers=()):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="make_models.py"
    )
    model.ir_version = 8
    path = os.path.join(HERE, name + ".onnx")
    onnx.save_model(model, path)
    return path


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


# Hardmax: a real ONNX op the importer does not support
save("unknown_op", [helper.make_node("Hardmax", ["x"], ["y"], name="pick")],
     [f32("x", [1, 4])], [f32("y", [1, 4])])

# Gelu (opset 20) with an approximation the DSL does not have
save("bad_attribute", [helper.make_node("Gelu", ["x"], ["y"], name="act", approximate="fast")],
     [f32("x", [1, 4])], [f32("y", [1, 4])], opset=20)

# a dynamic batch dimension, to be pinned with `batch = 1`
save("dynamic_dim", [helper.make_node("Relu", ["x"], ["y"], name="relu")],
     [f32("x", ["batch", 4])], [f32("y", ["batch", 4])])

# the first bytes of a valid model: a field cut in the middle
path = save("corrupt", [helper.make_node("Relu", ["x"], ["y"], name="relu")],
            [f32("x", [1, 4])], [f32("y", [1, 4])])
with open(path, "rb") as f:
    data = f.read()
with open(path, "wb") as f:
    f.write(data[: len(data) // 2])

# float Constant tensors used as data (parameters named after the Constant's output,
# loaded by from_onnx from the node): y = (x + c) * d, c from `value` in float_data,
# d in raw_data
c = helper.make_tensor("c", TensorProto.FLOAT, [1, 4], [0.5, -1.0, 2.0, 0.25])
d = helper.make_tensor("d", TensorProto.FLOAT, [4],
                       np.array([2.0, 3.0, -1.0, 0.5], dtype=np.float32).tobytes(), raw=True)
save("constant_tensor", [
    helper.make_node("Constant", [], ["shift"], name="shift_const", value=c),
    helper.make_node("Constant", [], ["scale"], name="scale_const", value=d),
    helper.make_node("Add", ["x", "shift"], ["h"], name="add"),
    helper.make_node("Mul", ["h", "scale"], ["y"], name="mul"),
], [f32("x", [1, 4])], [f32("y", [1, 4])])

# Resize (nearest, scales from an initializer) with no shape given for its output
save("resize_no_shape", [
    helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="nearest"),
], [f32("x", [1, 1, 2, 2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    initializers=[helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])])

# GELU written with float initializers of one value (as onnx.helper builders and some
# exporters write it), times a one-value "alpha": the importer folds them into the code
# (`#[scalars(...)]`), and `from_onnx` checks the file still holds them. The expected
# output is computed here, in f64 with Python's math.erf.
scalar_x = np.array([[-3.0, -1.5, -0.5, -0.125, 0.0, 0.25, 1.0, 2.75]], dtype=np.float32)
scalar_alpha = 1.25
save("scalar_initializers", [
    helper.make_node("Div", ["x", "sqrt2"], ["scaled"], name="gelu_div"),
    helper.make_node("Erf", ["scaled"], ["erf"], name="gelu_erf"),
    helper.make_node("Add", ["erf", "one"], ["shifted"], name="gelu_add"),
    helper.make_node("Mul", ["x", "shifted"], ["product"], name="gelu_mul"),
    helper.make_node("Mul", ["product", "half"], ["gelu"], name="gelu_half"),
    helper.make_node("Mul", ["gelu", "alpha"], ["y"], name="times_alpha"),
], [f32("x", [1, 8])], [f32("y", [1, 8])], initializers=[
    helper.make_tensor("sqrt2", TensorProto.FLOAT, [], [math.sqrt(2.0)]),
    helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
    helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5]),
    helper.make_tensor("alpha", TensorProto.FLOAT, [1], [scalar_alpha]),
])
np.save(os.path.join(HERE, "scalar_initializers_input.npy"), scalar_x)
np.save(os.path.join(HERE, "scalar_initializers_output.npy"), np.array(
    [[0.5 * float(v) * (1.0 + math.erf(float(v) / math.sqrt(2.0))) * scalar_alpha
      for v in scalar_x[0]]], dtype=np.float32))
