"""Import an exported LAS model into Relax: one private Relax function per LAS block.

Each ``lasnet::las_block`` call becomes a call of a private function ``las_block_<k>(x, w0, w1, ...)`` that
returns ``(y, count, mask)``. Its body is the block in plain Relax ops, dense and masked (the official semantics,
runnable as is: the reference the lowering is checked against); its attribute ``lasnet.spec`` carries the
block's shape (see :func:`~.export.spec_to_ints`) so that the ``LowerLASBlocks`` pass can replace the body with
the sparse TensorIR kernels.
"""

from __future__ import annotations

import warnings

import tvm
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program

from ..archs import BlockSpec
from .export import spec_from_ints

SPEC_ATTR = "lasnet.spec"


def _t(shape) -> relax.TensorType:
    return relax.TensorType([int(s) for s in shape], "float32")


def weight_shapes(s: BlockSpec) -> list[tuple[int, ...]]:
    """Shapes of the flat weight list of a block (see :func:`~.export.folded_weights`)."""
    shapes = [(s.c_mid, s.c_in), (s.c_mid,), (s.c_in,), (1,), (s.c_mid, s.c_mid // s.groups, 3, 3), (s.c_mid,),
              (s.c_out, s.c_mid), (s.c_out,)]
    if s.downsample:
        shapes += [(s.c_out, s.c_in), (s.c_out,)]
    if s.se_channels:
        shapes += [(s.se_channels, s.c_mid), (s.se_channels,), (s.c_mid, s.se_channels), (s.c_mid,)]
    return shapes


def block_params(s: BlockSpec) -> list[relax.Var]:
    """Parameters of a block function: the input ``x [1, C_in, H, W]`` then the weights."""
    x = relax.Var("x", _t((1, s.c_in, s.in_size, s.in_size)))
    return [x] + [relax.Var(f"w{i}", _t(shape)) for i, shape in enumerate(weight_shapes(s))]


def _conv1x1(bb, x, w, b, cout, cin, stride=1):
    k = bb.emit(relax.op.reshape(w, (cout, cin, 1, 1)))
    y = bb.emit(relax.op.nn.conv2d(x, k, strides=stride))
    return bb.emit(relax.op.add(y, relax.op.reshape(b, (1, cout, 1, 1))))


def dense_block_function(index: int, spec_ints, s: BlockSpec) -> relax.Function:
    """The block as dense, masked Relax ops: ``(x, weights...) -> (y, count, mask)``."""
    bb = relax.BlockBuilder()
    params = block_params(s)
    x, w = params[0], params[1:]
    op = relax.op
    name = f"las_block_{index}"
    with bb.function(name, params, attrs={SPEC_ATTR: [int(v) for v in spec_ints]}, private=True):
        with bb.dataflow():
            f1 = bb.emit(op.nn.relu(_conv1x1(bb, x, w[0], w[1], s.c_mid, s.c_in)))
            diff = bb.emit(op.nn.conv2d(x, op.reshape(w[2], (1, s.c_in, 1, 1))))
            k = s.S * s.stride
            pooled = bb.emit(op.nn.avg_pool2d(diff, k, k, ceil_mode=True, count_include_pad=False)) if k > 1 else diff
            coarse = bb.emit(op.astype(op.greater_equal(op.add(pooled, w[3]), relax.const(0.0)), "float32"))
            count = bb.emit(op.astype(op.reshape(op.sum(coarse), (1,)), "int32"))
            flat = bb.emit(op.astype(op.reshape(coarse, (s.grid * s.grid,)), "int32"))
            mask = coarse
            if s.S > 1:
                mask = bb.emit(op.repeat(op.repeat(coarse, s.S, axis=2), s.S, axis=3))
                mask = bb.emit(op.strided_slice(mask, axes=[2, 3], begin=[0, 0], end=[s.out_size, s.out_size]))
            y = bb.emit(op.nn.conv2d(f1, w[4], strides=s.stride, padding=1, groups=s.groups))
            y = bb.emit(op.nn.relu(op.add(y, op.reshape(w[5], (1, s.c_mid, 1, 1)))))
            rest = w[8 + 2 * s.downsample :]
            if s.se_channels:
                act = bb.emit(op.sum(op.multiply(y, mask), axis=[2, 3]))
                n = bb.emit(op.maximum(op.sum(mask, axis=[2, 3]), relax.const(1.0)))
                h = bb.emit(op.nn.relu(op.add(op.matmul(op.divide(act, n), op.permute_dims(rest[0])), rest[1])))
                sc = bb.emit(op.sigmoid(op.add(op.matmul(h, op.permute_dims(rest[2])), rest[3])))
                y = bb.emit(op.multiply(y, op.reshape(sc, (1, s.c_mid, 1, 1))))
            y = bb.emit(op.multiply(_conv1x1(bb, y, w[6], w[7], s.c_out, s.c_mid), mask))
            ident = _conv1x1(bb, x, w[8], w[9], s.c_out, s.c_in, s.stride) if s.downsample else x
            y = bb.emit(op.nn.relu(op.add(y, ident)))
            out = bb.emit_output(relax.Tuple([y, count, flat]))
        bb.emit_func_output(out)
    return bb.get()[name]


def _convert_las_block(node, importer) -> relax.Expr:
    x_node, w_nodes, spec_ints = node.args
    index, spec = spec_from_ints(spec_ints)
    func = dense_block_function(index, spec_ints, spec)
    bb = importer.block_builder
    gv = bb.add_func(func, f"las_block_{index}")
    args = [importer.env[x_node]] + [importer.env[w] for w in w_nodes]
    return bb.emit(relax.Call(gv, args))


def import_exported(ep) -> tvm.IRModule:
    """Relax module of an :func:`~.export.export_model` program: ``main(x) -> (logits, counts, masks)``."""
    with warnings.catch_warnings():  # torch-internal pytree deprecation, raised while copying the program
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        return from_exported_program(ep, custom_convert_map={"las_block.default": _convert_las_block})
