"""Graph plumbing: cut a graph to what some outputs need, and infer static shapes cheaply."""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

# Initializers above this many elements are replaced by typed inputs during shape inference,
# so inference never copies the weights; small ones stay because Reshape/Slice need their values.
_SMALL = 4096


def producers(nodes) -> dict[str, onnx.NodeProto]:
    return {o: n for n in nodes for o in n.output if o}


def needed_nodes(nodes, outputs, stop_at=()) -> list[onnx.NodeProto]:
    """Nodes (in original order) on which `outputs` depend, not looking past tensors in stop_at."""
    prod = producers(nodes)
    need, stack, keep = set(), list(outputs), set()
    stop = set(stop_at)
    while stack:
        t = stack.pop()
        if t in need or t in stop:
            continue
        need.add(t)
        node = prod.get(t)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            stack.extend(i for i in node.input if i)
            for attr in node.attribute:  # subgraph inputs (If/Loop) captured from outer scope
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.extend(_outer_names(attr.g))
    return [n for n in nodes if id(n) in keep]


def _outer_names(g: onnx.GraphProto) -> list[str]:
    local = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    return [i for n in g.node for i in n.input if i and i not in local]


def float_info(name: str, shape=None, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def infer_shapes(nodes, inits: dict, inputs, opset_imports) -> dict[str, list]:
    """Static shapes (ints, or strings for symbolic dims) of every tensor the nodes make."""
    graph_inputs = list(inputs)
    small = []
    for name, t in inits.items():
        if _numel(t) <= _SMALL:
            small.append(t)
        else:
            graph_inputs.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
    graph = helper.make_graph(nodes, "shapes", graph_inputs, [], initializer=small)
    model = helper.make_model(graph, opset_imports=opset_imports)
    model.ir_version = max(model.ir_version, 8)
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    for name, t in inits.items():
        shapes[name] = list(t.dims)
    return shapes


def elem_types(nodes, inits: dict, inputs, opset_imports) -> dict[str, int]:
    """Element types of the tensors (used to know which tensors carry floats)."""
    graph = helper.make_graph(nodes, "types", list(inputs), [], initializer=list(inits.values()))
    model = helper.make_model(graph, opset_imports=opset_imports)
    inferred = onnx.shape_inference.infer_shapes(model)
    return {
        vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
    }


def _numel(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n
