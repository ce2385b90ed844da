"""Hessian-vector products by double backpropagation, for GraSP's scores
(lth_tf.methods) and the landscape analysis's top Hessian eigenvalue."""
import tensorflow as tf


def vector_product(loss_of, variables, vector, batches) -> list[tf.Tensor]:
    """H·v summed over `batches`, H the Hessian of loss_of(x, y) with respect to `variables`: the gradient
    of (∇loss · v), v held constant (Pearlmutter, 1994)."""
    total = [tf.zeros_like(v) for v in variables]
    for x, y in batches:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = loss_of(x, y)
            dot = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(inner.gradient(loss, variables), vector)])
        total = [t + h for t, h in zip(total, outer.gradient(dot, variables))]
    return total
