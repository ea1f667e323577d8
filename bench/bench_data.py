"""Benchmark: the NumPy CIFAR-10 training pipeline against DeepOBS' own tf.data pipeline, same files.

Both read the same CIFAR-10 binary files (synthetic content, official record format) and produce one
training epoch of augmented, per-image standardised batches of 128 (data.md §7-§8):

* ours: ``testproblems.data.load_dataset('cifar10', ...).batches('train', epoch)`` (NumPy, one thread plus
  the prefetch thread);
* reference: DeepOBS 1.2's pipeline rebuilt with TF2 ops (FixedLengthRecordDataset over the shuffled
  files, parse + ``tf.image`` augmentation with 8 parallel calls, shuffle(20,000), batch with drop
  remainder, prefetch(4)), measured in the same run, rounds interleaved; medians reported.

Prints images/s of both and the ratio ours / reference (> 1: ours is faster). The pipeline only has to
keep ahead of the training step; the ratio shows the NumPy port costs no more than DeepOBS' own input code.
Usage: ``.venv/bin/python bench/bench_data.py [--images-per-file 2560 --rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from testproblems.data import clear_cache, load_dataset, synthetic  # noqa: E402

BATCH = 128


def deepobs_tf_pipeline(tf, folder: Path, valid_records: int, seed: int):
    """DeepOBS dev cifar10.py train pipeline (parse + augment + shuffle + batch), TF2 spelling."""
    record_bytes, image_bytes = 3073, 3072

    def parse(raw):
        record = tf.reshape(tf.io.decode_raw(raw, tf.uint8), [record_bytes])
        label = tf.cast(tf.slice(record, [0], [1]), tf.int32)
        image = tf.cast(
            tf.transpose(tf.reshape(tf.slice(record, [1], [image_bytes]), [3, 32, 32]), [1, 2, 0]), tf.float32
        )
        image = tf.image.resize_with_crop_or_pad(image, 36, 36)
        image = tf.image.random_crop(image, [32, 32, 3])
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_brightness(image, max_delta=63.0 / 255.0)
        image = tf.image.random_saturation(image, lower=0.5, upper=1.5)
        image = tf.image.random_contrast(image, lower=0.2, upper=1.8)
        image = tf.image.per_image_standardization(image)
        return image, tf.squeeze(tf.one_hot(label, depth=10))

    tf.random.set_seed(seed)
    files = tf.random.shuffle(tf.io.matching_files(str(folder / "data_batch_*.bin")))
    data = tf.data.FixedLengthRecordDataset(files, record_bytes).skip(valid_records)
    data = data.map(parse, num_parallel_calls=8).shuffle(20000)
    return data.batch(BATCH, drop_remainder=True).prefetch(4)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-file", type=int, default=2560)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        n = args.images_per_file
        synthetic.write_prepared("cifar10", tmp, n_train=5 * n, n_test=n)
        ds = load_dataset("cifar10", tmp, batch_size=BATCH, seed=0)
        ours, ref = [], []
        for r in range(args.rounds):
            for which in ("ours", "ref") if r % 2 == 0 else ("ref", "ours"):
                t0 = time.perf_counter()
                count = 0
                if which == "ours":
                    for x, _ in ds.batches("train", epoch=r):
                        count += len(x)
                    ours.append(count / (time.perf_counter() - t0))
                else:
                    for x, _ in deepobs_tf_pipeline(tf, Path(tmp) / "cifar-10", n, r):
                        count += int(x.shape[0])
                    ref.append(count / (time.perf_counter() - t0))
        clear_cache()
    o, f = statistics.median(ours), statistics.median(ref)
    print(f"cifar10 train epoch ({4 * n} images, batch {BATCH}, {os.cpu_count()} CPUs)")
    print(f"  numpy (testproblems.data): {o:9.0f} images/s")
    print(f"  tf.data (DeepOBS ops)    : {f:9.0f} images/s")
    print(f"  ratio ours / DeepOBS     : {o / f:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
