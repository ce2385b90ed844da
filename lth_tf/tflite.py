"""A ticket as a TFLite flatbuffer whose sparse fully-connected layers compute sparse.

TFLite's converter, asked for Optimize.EXPERIMENTAL_SPARSITY, stores a weight
with at least 30% zeros compressed (CSR), but it computes with the compressed
form only where the mask fits 1x4 blocks well (float: a block-sparse weight,
about below 3.5% of the weights for a random mask); every other compressed
weight gets a DENSIFY op that expands it when the model loads, and the layer
computes dense. Conv kernels are never computed sparse (TFLite has no sparse
convolution): they stay compressed on disk and are expanded at load.

sparse_kernels() goes further for the fully-connected layers: each
compressed weight is stored in the form estimated fastest by COSTS (dense,
random CSR, or 1x4 blocks wherever the mask's blocks are few enough, not
only where the converter's test allows them), the sparse forms fed straight
to TFLite's sparse-weight kernel (DENSIFY dropped, the op at version 8).
The weights come from the plain conversion: the converter's own 1x4 blocks
drop the last columns' weights of a layer whose input width is not a
multiple of 4 (wrong outputs). The measurements behind COSTS:
docs/speed.md.

A user loads the file with LiteRT (`pip install ai-edge-litert`):
`ai_edge_litert.interpreter.Interpreter(model_path=..., num_threads=1,
experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)`.
"""
import flatbuffers
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

BLOCK = 4  # the float block-sparse fully-connected kernel's block: 1 x 4 along the inputs
# Estimated time of a fully-connected layer at batch 1, relative to one dense weight: per weight (dense),
# per kept weight (random CSR), per 1 x BLOCK block holding a kept weight (blocks). Measured with one
# 784x300 layer, LiteRT's builtin kernels, one thread (docs/speed.md): dense 28 us; random CSR 19 us
# at 5% (11,760 kept); blocks 8.6 and 11.9 us at 2% and 3% of random masks (4,586 and 6,762 blocks).
COSTS = {"dense": 1.0, "random CSR": 14.0, "blocks": 15.0}


class ConversionError(Exception):
    """The network holds an op TFLite cannot convert; the message names its layer."""


def convert(serving: tf.Module, sparse: bool = True) -> bytes:
    """The flatbuffer of `serving`'s signature (export.Serving: raw inputs -> logits, probabilities),
    float32, its fully-connected layers sparse as sparse_kernels() makes them (sparse=False: every weight
    stored and computed dense, as TFLite's converter makes it by default)."""
    if not sparse:
        return _converted(serving, sparse=False)
    return sparse_kernels(_converted(serving, sparse=True), lambda: _converted(serving, sparse=False))


def _converted(serving: tf.Module, sparse: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serving.serve.get_concrete_function()], serving)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    try:
        return converter.convert()
    except Exception as error:  # tensorflow.lite's ConverterError, with the failing ops in error.errors
        raise ConversionError(_failing_layers(error)) from error


def _failing_layers(error) -> str:
    """'layer L: op O is not supported by TFLite' for each failing op the converter's error names."""
    found = []
    for item in getattr(error, "errors", []):
        op = item.operator.name.removeprefix("tf.")
        where = [call.name.split("@")[0] for call in item.location.call] if item.HasField("location") else []
        scopes = [part for name in where for part in name.split("/")][:-1]
        layer = next((s for s in scopes if s not in ("StatefulPartitionedCall", "model", "sequential")), "?")
        found.append(f"layer {layer}: op {op} is not supported by TFLite")
    return "; ".join(dict.fromkeys(found)) or str(error).strip().splitlines()[0]


def sparse_kernels(content: bytes, plain) -> bytes:
    """The flatbuffer `content` (converted with EXPERIMENTAL_SPARSITY) with each compressed fully-connected
    weight stored in the form cheapest to compute by COSTS: dense (expanded at load), random CSR or 1x4
    blocks, the last two read by TFLite's sparse-weight kernel; the same outputs. plain() gives the
    flatbuffer converted without sparsity, whose weights are re-encoded (the converter's own 1x4 blocks
    drop the last columns of a weight whose input width is not a multiple of 4)."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    dense_model, sparse_code = None, None
    for index, (graph, op) in enumerate(_fully_connected(model)):
        densified = {o.outputs[0]: o for o in graph.operators if _code(model, o) == schema.BuiltinOperator.DENSIFY}
        weight = op.inputs[1]
        source = densified[weight].inputs[0] if weight in densified else weight
        tensor = graph.tensors[source]
        if tensor.sparsity is None or tensor.type != schema.TensorType.FLOAT32 or len(tensor.shape) != 2:
            continue  # stored dense by the converter (under 30% zeros)
        dense_model = dense_model or schema.ModelT.InitFromPackedBuf(bytearray(plain()), 0)
        plain_graph, plain_op = _fully_connected(dense_model)[index]
        plain_weight = plain_graph.tensors[plain_op.inputs[1]]
        values = np.frombuffer(bytes(dense_model.buffers[plain_weight.buffer].data), np.float32)
        stored = len(model.buffers[tensor.buffer].data) // 4  # the converter's float32s: kept ones (random CSR)
        if list(plain_weight.shape) != list(tensor.shape) or (
                len(tensor.sparsity.traversalOrder) == 2 and stored != np.count_nonzero(values)):
            raise ValueError(f"fully-connected op {index}: the plain conversion's weight does not match")
        values = values.reshape(tensor.shape)
        form = cheapest(values)
        if form == "dense":
            if weight not in densified:  # the converter's 1x4 blocks, where dense computes faster
                tensor.sparsity = None
                model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
            continue  # else stored in random CSR and expanded at load by the converter's DENSIFY
        _store(model, tensor, values, blocked=form == "blocks")
        if weight in densified:
            graph.operators.remove(densified[weight])
            op.inputs[1] = source
        sparse_code = _sparse_code(model, op) if sparse_code is None else sparse_code
        op.opcodeIndex = sparse_code
    out = flatbuffers.Builder(len(content))
    out.Finish(model.Pack(out), file_identifier=b"TFL3")
    return bytes(out.Output())


def cheapest(values: np.ndarray) -> str:
    """'dense', 'random CSR' or 'blocks' (1 x BLOCK, where the input width allows): the form of a
    fully-connected weight [out, in] with the least estimated time by COSTS (blocks: by a fifth)."""
    costs = {"dense": COSTS["dense"] * values.size, "random CSR": COSTS["random CSR"] * np.count_nonzero(values)}
    blocks = (COSTS["blocks"] * np.count_nonzero(values.reshape(values.shape[0], -1, BLOCK).any(-1))
              if values.shape[1] % BLOCK == 0 else np.inf)
    if blocks < 0.8 * min(costs.values()):  # a block stores BLOCK values: a larger file, so only if clearly faster
        return "blocks"
    return min(costs, key=costs.get)


def _fully_connected(model) -> list:
    """(subgraph, op) of every fully-connected op, in the order of the flatbuffer."""
    return [(graph, op) for graph in model.subgraphs for op in graph.operators
            if _code(model, op) == schema.BuiltinOperator.FULLY_CONNECTED]


def _code(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _sparse_code(model, op) -> int:
    """The index of a fully-connected op code at version 8 (sparse weights), added beside the dense one."""
    code = model.operatorCodes[op.opcodeIndex]
    if code.version >= 8:
        return op.opcodeIndex
    sparse = schema.OperatorCodeT()
    sparse.builtinCode, sparse.deprecatedBuiltinCode, sparse.version = code.builtinCode, code.deprecatedBuiltinCode, 8
    model.operatorCodes.append(sparse)
    return len(model.operatorCodes) - 1


def _store(model, tensor, values: np.ndarray, blocked: bool):
    """Re-encodes `tensor` as the nonzero entries of `values` [out, in]: dense rows, then the columns in
    CSR, one by one (random CSR) or in 1 x BLOCK blocks (each block's BLOCK values stored)."""
    width = BLOCK if blocked else 1
    cells = values.reshape(values.shape[0], -1, width)
    rows, cols = np.nonzero(cells.any(-1))
    segments = np.searchsorted(rows, np.arange(values.shape[0] + 1))
    sparsity = schema.SparsityParametersT()
    sparsity.traversalOrder, sparsity.blockMap = ([0, 1, 2], [1]) if blocked else ([0, 1], [])
    outer, inner = schema.DimensionMetadataT(), schema.DimensionMetadataT()
    outer.format, outer.denseSize = schema.DimensionType.DENSE, values.shape[0]
    inner.format = schema.DimensionType.SPARSE_CSR
    inner.arraySegmentsType, inner.arraySegments = _index_vector(segments)
    inner.arrayIndicesType, inner.arrayIndices = _index_vector(cols)
    sparsity.dimMetadata = [outer, inner]
    if blocked:
        block = schema.DimensionMetadataT()
        block.format, block.denseSize = schema.DimensionType.DENSE, BLOCK
        sparsity.dimMetadata.append(block)
    tensor.sparsity = sparsity
    model.buffers[tensor.buffer].data = np.frombuffer(cells[rows, cols].astype(np.float32).tobytes(), np.uint8)


def _index_vector(values: np.ndarray):
    if values.size == 0 or values.max() <= np.iinfo(np.uint16).max:
        vector, kind = schema.Uint16VectorT(), schema.SparseIndexVector.Uint16Vector
        vector.values = values.astype(np.uint16)
    else:
        vector, kind = schema.Int32VectorT(), schema.SparseIndexVector.Int32Vector
        vector.values = values.astype(np.int32)
    return kind, vector
