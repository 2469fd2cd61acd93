"""The documented caps of the spaces layer: how large a space, an architecture or a network may be.

Every cap exists so that an input a user can type (a space file, an architecture, a command-line number) is
either refused with a one-line error or built in reasonable time and memory; none of them binds on the
shipped spaces or on the sizes the README suggests. Each constant says what it bounds and why that value.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------- files
# Space files are a few kB; a megabyte is far beyond any hand-written space and keeps a YAML parse cheap.
MAX_SPACE_FILE_BYTES = 1 << 20
# One architecture is at most a few tens of kB even at MAX_TOTAL_DEPTH blocks.
MAX_ARCH_JSON_BYTES = 1 << 20
# An --archs file (one JSON per line): 64 MiB holds tens of thousands of architectures.
MAX_ARCHS_FILE_BYTES = 64 << 20

# ------------------------------------------------------------------------------------------ spaces
# Units of a macro-architecture: the shipped spaces have 1-5; 16 leaves room for deeper macro designs.
MAX_UNITS = 16
# Blocks per unit: DenseNet-264's largest unit has 64 layers, the largest of any classic CNN family.
MAX_UNIT_DEPTH = 64
# Blocks over all units: ResNet-1001 has 333 blocks; 256 bounds the NNI labels (one per block position and
# choice), the nnictl nested choices (quadratic in the unit depth) and build time.
MAX_TOTAL_DEPTH = 256
# Architectures of one space: 10**300 keeps the count a float, so it can be printed, compared and stored
# (the shipped spaces have at most 8.4e26).
MAX_ARCHITECTURES = 10**300
# Values in one choice list: the largest shipped list (convnet filters) has 31.
MAX_CHOICE_VALUES = 256
# Channel counts (widths, filters, stems, growth, last layer) before the width multiplier: the widest
# shipped layer has 2048 channels.
MAX_CHANNELS = 8192
# Kernel sizes and paddings: the shipped spaces use 1-9; larger kernels are not used by these families.
MAX_KERNEL_SIZE = 15
MAX_PADDING = 15
# Strides: 2 in every shipped unit; 8 keeps a stage from discarding most of its input.
MAX_STRIDE = 8
# Channel ratios of the families (bottleneck reduction, expansion of MobileNet blocks and heads): 4 and 6
# in the shipped spaces.
MAX_CHANNEL_RATIO = 64
# Per-block expansion ratios (a choice): 0.5-1 in the shipped spaces.
MAX_EXPAND_RATIO = 8
# Input channels of the network (RGB is 3; hyperspectral inputs have a few hundred).
MAX_IN_CHANNELS = 1024
# Classifier outputs: ImageNet-21k has about 21,841 classes.
MAX_NUM_CLASSES = 100_000

# -------------------------------------------------------------------------------------- parameters
# Input resolution: 4096x4096 is above any CNN benchmark resolution; one 100000x100000 RGB input alone
# would take 120 GB.
MAX_INPUT_SIZE = 4096
# Channel multiplier: 16x the shipped widths is already beyond what the memory caps below allow for most
# architectures; larger multipliers overflow channel arithmetic.
MAX_WIDTH_MULT = 16.0
# Architectures drawn by one call of the samplers: 100,000 canonical architectures take a few hundred MB
# and about a minute; the ESM campaigns need a few thousand.
MAX_SAMPLES = 100_000
# Seeds: numpy refuses negative seeds, and seeds are recorded in SQLite, whose integers are signed 64-bit.
MAX_SEED = 2**63 - 1

# ------------------------------------------------------------------------------------------ networks
# Weights of one built network: 500 M float32 parameters (2 GB) is the most an ONNX file can hold (protobuf
# refuses messages over 2 GiB), so a larger network could be built but never exported or measured.
MAX_PARAMETERS = 500_000_000
# The largest single activation of a forward pass at batch 1: 2**28 float32 values (1 GiB); a Jetson Nano
# has 4 GB in all, and larger tensors make a measurement swap instead of fail.
MAX_ACTIVATION_ELEMENTS = 1 << 28
