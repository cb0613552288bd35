# A small GPT that trains in 10 minutes on 2 CPU cores and then tells TinyStories-like stories.
#   python prepare.py --dataset=data_sample/tinystories    # the sample shipped in this repository
#   python train.py config/tinystories_cpu.py
#   python sample.py --out_dir=out-tinystories-cpu --start="Once upon a time"
out_dir = "out-tinystories-cpu"
data_dir = "data/tinystories"
# 4 layers of 128 channels: 1.9M parameters, more than half of them the 8192-token embedding. On a fixed
# CPU budget a small model that sees more tokens beats a bigger one that sees fewer (README, Results).
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256  # a TinyStories story is ~200 tokens
dropout = 0.0  # 3.4 epochs barely overfit a model this small, and dropout costs ~15% of a CPU step
batch_size = 16
gradient_accumulation_steps = 1
max_iters = 600  # 2.5M tokens, 3.4 epochs of the shipped sample: 10 minutes on 2 cores
learning_rate = 2e-3  # small models tolerate (and need) larger steps than GPT-2 small's 6e-4
min_lr = 2e-4
warmup_iters = 30
eval_interval = 50
eval_iters = 10
log_interval = 10
ckpt_interval = 50
