# A small GPT that trains in 10 minutes on 2 CPU cores and then tells TinyStories-like stories.
#   python prepare.py --dataset=data_sample/tinystories    # the sample shipped here, 4,096-token BPE (the default)
#   python train.py config/tinystories_cpu.py
#   python sample.py --out_dir=out-tinystories-cpu --start="Once upon a time"
# Why each value: results/tinystories-recipe.md, one measured 10-minute run per alternative.
from configurator import cpu_has_bfloat16
out_dir = "out-tinystories-cpu"
data_dir = "data/tinystories"
# 4 layers of 192 channels, 2.6M parameters, 0.8M of them the 4,096-token embedding: in 10 minutes on a 2-core CPU
# with AMX it beats 4 x 128, which sees 1.3x the tokens, and ties 4 x 256, which sees 0.8x
n_layer = 4
n_head = 4
n_embd = 192
# many small steps: 16 x 128 = 2,048 tokens a step. A story is ~200 tokens; 128 of context score as well as 64 (which
# learns faster per token) and keep a story's characters for a paragraph
block_size = 128
batch_size = 16
gradient_accumulation_steps = 1
# the budget is time, not steps: the 2-core machines this runs on differ 1.5x in speed, so train.py times the
# warm-up and fits max_iters to 9.5 minutes (4,490 steps, 9.2M tokens, 12 epochs of the sample's 747k on a Sapphire
# Rapids with AMX); max_iters is only the most a faster machine does
max_minutes = 9.5
max_iters = 10000
learning_rate = 2e-3  # 2,048 tokens a step average out more noise than 1,024 and take a larger step
min_lr = 2e-4
beta2 = 0.99  # a longer memory of squared gradients than GPT-2's 0.95: steadier steps on small batches
weight_decay = 0.5  # 12 epochs overfit (train loss ends ~0.7 below val); decay costs nothing, 1.0 gains nothing more
dropout = 0.0  # halves a CPU step's speed (attention is 4.5x slower with dropout), more than it gives back
warmup_iters = 100
eval_interval = 500
eval_iters = 20
log_interval = 100
ckpt_interval = 1000
# a CPU with native bfloat16 (AVX512-BF16, AMX) multiplies ~2.5x faster in it, and compiling fuses the rest:
# together 1.5-1.7x float32's step (bench.py train). Elsewhere train.py falls back to float32 and says so, and the
# run stays uncompiled: in float32 compiling changes a step by -6% to +10% (two machines), and costs its compile time
dtype = "bfloat16"
compile = cpu_has_bfloat16()
