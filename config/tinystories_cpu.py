# A small GPT that trains in 10 minutes on 2 CPU cores and then tells TinyStories-like stories.
#   python prepare.py --dataset=data_sample/tinystories    # the sample shipped here, 4,096-token BPE (the default)
#   python train.py config/tinystories_cpu.py
#   python sample.py --out_dir=out-tinystories-cpu --start="Once upon a time"
# Why each value: results/tinystories-recipe.md, one measured 10-minute run per alternative.
from configurator import cpu_has_bfloat16
out_dir = "out-tinystories-cpu"
data_dir = "data/tinystories"
# 4 layers of 128 channels, 1.3M parameters, 0.5M of them the 4,096-token embedding: at this budget a small model
# that sees more tokens beats a bigger one that sees fewer
n_layer = 4
n_head = 4
n_embd = 128
# many small steps: 16 x 128 = 2,048 tokens a step. A story is ~200 tokens; 128 of context score as well as 64 (which
# learns faster per token) and keep a story's characters for a paragraph
block_size = 128
batch_size = 16
gradient_accumulation_steps = 1
# ~9 minutes on 2 cores, with room for a slower moment of the machine: 3,800 steps (7.8M tokens, ~10 epochs of the
# sample's 747k) on a CPU with native bfloat16, 2,500 in float32 on one without
max_iters = 3800 if cpu_has_bfloat16() else 2500
learning_rate = 3e-3  # 2,048 tokens a step average out more noise than 1,024 and take a larger step
min_lr = 3e-4
beta2 = 0.99  # a longer memory of squared gradients than GPT-2's 0.95: steadier steps on small batches
weight_decay = 0.5  # 10 epochs overfit (train loss ends ~0.35 below val): decay is regularisation that costs nothing
dropout = 0.0  # costs ~30% of a CPU step, more than it gives back at this budget
warmup_iters = 100
eval_interval = 500
eval_iters = 20
log_interval = 100
ckpt_interval = 1000
# a CPU with native bfloat16 (AVX512-BF16, AMX) multiplies ~2.5x faster in it, and compiling fuses the rest:
# together 1.5x float32's step (bench.py train). Elsewhere train.py falls back to float32 and says so, and the run
# stays uncompiled: in float32 compiling gains ~10% a step, about its own compile time over such a run
dtype = "bfloat16"
compile = cpu_has_bfloat16()
