"""Writes ONNX's backend node tests in ONNX's own on-disk layout, for
conformance/src/backend.rs (the node tests through the whole-file importer):

    OUT/<test>/model.onnx
    OUT/<test>/test_data_set_0/input_<i>.pb    TensorProto, one per graph input
    OUT/<test>/test_data_set_0/output_<i>.pb   TensorProto, one per graph output

    python export.py OUT

The onnx wheel of 1.23 no longer carries onnx/backend/test/data/node; it builds the
same tests in memory from its generator scripts (onnx.backend.test.loader, which
re-seeds numpy before each generator), and this script saves them. A test whose data
are not tensors (sequences, optionals, maps) is left out. When the installed onnx
does carry the on-disk folder, it is copied instead.
"""

import os
import shutil
import sys
import warnings

import numpy as np
import onnx
from onnx import numpy_helper


def installed_dir():
    d = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")
    return d if os.path.isdir(d) and os.listdir(d) else None


def main(out):
    os.makedirs(out, exist_ok=True)
    src = installed_dir()
    if src:
        for name in sorted(os.listdir(src)):
            shutil.copytree(os.path.join(src, name), os.path.join(out, name), dirs_exist_ok=True)
        print(f"copied {len(os.listdir(src))} node tests from {src}")
        return
    from onnx.backend.test.loader import load_node_model_tests

    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some generators divide by zero on purpose
        tests = load_node_model_tests()
    written = skipped = 0
    for t in sorted(tests, key=lambda t: t.name):
        if not t.data_sets:
            skipped += 1
            continue
        inputs, outputs = t.data_sets[0]
        graph = t.model.graph
        if not all(isinstance(a, (np.ndarray, np.generic, onnx.TensorProto)) for a in list(inputs) + list(outputs)):
            skipped += 1
            continue
        case = os.path.join(out, t.name)
        data = os.path.join(case, "test_data_set_0")
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(case, "model.onnx"), "wb") as f:
            f.write(t.model.SerializeToString())
        for prefix, arrays, values in (("input", inputs, graph.input), ("output", outputs, graph.output)):
            for i, (a, v) in enumerate(zip(arrays, values)):
                if isinstance(a, onnx.TensorProto):
                    tensor = onnx.TensorProto()
                    tensor.CopyFrom(a)
                    tensor.name = v.name
                else:
                    tensor = numpy_helper.from_array(np.asarray(a), name=v.name)
                with open(os.path.join(data, f"{prefix}_{i}.pb"), "wb") as f:
                    f.write(tensor.SerializeToString())
        written += 1
    print(f"wrote {written} node tests to {out} ({skipped} with non-tensor data left out)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python export.py OUT")
    main(sys.argv[1])
