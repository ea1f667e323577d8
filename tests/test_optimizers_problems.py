"""The selection mask on the 8 test problems' models (protocol §1.2 table), built with testproblems."""

from __future__ import annotations

import numpy as np
import pytest
from tree_helpers import PAPER_PROBLEMS

import optimizers
import testproblems  # noqa: E402

PROBLEMS = list(PAPER_PROBLEMS)

# protocol §1.2: (number of selected tensors, number of selected scalars or None, plain tensors are...)
EXPECTED = {
    "quadratic_deep": (1, 100),  # theta 1x100
    "mnist_vae": (11, None),  # 3 conv, 3 conv-transpose, 5 dense kernels
    "fmnist_vae": (11, None),
    "fmnist_2c2d": (4, 5 * 5 * 32 + 5 * 5 * 32 * 64 + 3136 * 1024 + 1024 * 10),
    "cifar10_3c3d": (6, None),
    "cifar100_allcnnc": (9, None),
    "svhn_wrn164": (None, None),  # all conv kernels + final dense kernel
    # embedding 83x128, two TF1 LSTM kernels 256x512 (= Keras kernel + recurrent_kernel), softmax_w 128x83
    "tolstoi_char_rnn": (6, 83 * 128 + 2 * 256 * 512 + 128 * 83),
}
SELECTED_SUFFIXES = ("kernel", "embeddings", "theta")  # test-side check only; the rule never reads names
PLAIN_SUFFIXES = ("bias", "gamma", "beta")


def test_all_eight_problems_are_known():
    assert set(PROBLEMS) <= set(testproblems.names())


@pytest.mark.parametrize("name", PROBLEMS)
def test_default_rule_selects_exactly_the_kernels(name):
    model = testproblems.get(name).build_model()
    opt = optimizers.make("PowKernelMomentumOptimizer", model, learning_rate=0.01, power=0.5)
    prov = opt.nlwu_provenance
    variables = {v.path: v for v in model.trainable_variables}
    assert prov["select"] == "rank>=2"
    assert sorted(prov["selected"] + prov["not_selected"]) == sorted(variables)
    assert prov["selected"], "nothing selected"
    for path in prov["selected"]:
        assert len(variables[path].shape) >= 2 and path.endswith(SELECTED_SUFFIXES), path
    for path in prov["not_selected"]:
        assert len(variables[path].shape) == 1 and path.endswith(PLAIN_SUFFIXES), path
    n_tensors, n_scalars = EXPECTED[name]
    if n_tensors is not None:
        assert len(prov["selected"]) == n_tensors
    if n_scalars is not None:
        assert sum(int(np.prod(variables[p].shape)) for p in prov["selected"]) == n_scalars
    if name == "svhn_wrn164":  # batch-norm scale/offset and the dense bias keep the plain gradient
        assert any(p.endswith("gamma") for p in prov["not_selected"])
        assert sum(p.endswith("bias") for p in prov["not_selected"]) == 1
    if name == "quadratic_deep":  # theta (1x100, no 'ernel' in its name) is selected: protocol §1.2
        assert [tuple(variables[p].shape) for p in prov["selected"]] == [(1, 100)]


@pytest.mark.parametrize("name", ["cifar10_3c3d_nodecay", "cifar100_allcnnc_nodecay", "svhn_wrn164_nodecay"])
def test_decay_default_covers_the_tensors_deepobs_l2_covers(name):
    """protocol §2: decoupled decay on the selected tensors = DeepOBS' L2 set (conv/dense kernels)."""
    model = testproblems.get(name).build_model()
    opt = optimizers.make(
        "PowKernelMomentumOptimizerW_momscaled", model, learning_rate=0.01, power=0.5, weight_decay_opt=5e-4
    )
    prov = opt.nlwu_provenance
    assert prov["decayed"] == prov["selected"]
    assert all(p.endswith("kernel") for p in prov["decayed"])


def test_sparse_embedding_gradient_is_mapped_densely():
    """TensorFlow gives embedding lookups IndexedSlices gradients (duplicates summed first); φ acts on the
    full dense gradient (protocol §1.2), once."""
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("IndexedSlices are TensorFlow-only")
    import tensorflow as tf

    table = keras.Variable(np.ones((6, 3), "float32"), name="embeddings")
    values = np.array([[0.25, -0.5, 0.0], [0.75, 1.0, -2.0], [0.25, 0.5, 0.5]], "float32")
    indices = np.array([1, 4, 1])
    grad = tf.IndexedSlices(tf.constant(values), tf.constant(indices), tf.constant([6, 3]))
    opt = optimizers.make("PowKernelMomentumOptimizer", None, learning_rate=0.1, power=0.5)
    opt.apply([grad], [table])
    dense = np.zeros((6, 3))
    np.add.at(dense, indices, values)
    expected = 1.0 - 0.1 * np.sign(dense) * np.sqrt(np.abs(dense))
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-6)
