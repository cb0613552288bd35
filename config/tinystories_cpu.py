# A small GPT that trains in about 10 minutes on 2 CPU cores and then tells TinyStories-like stories.
#   python prepare.py --dataset=../shared/data/tinystories
#   python train.py config/tinystories_cpu.py
#   python sample.py --out_dir=out-tinystories-cpu --start="Once upon a time"
out_dir = "out-tinystories-cpu"
data_dir = "data/tinystories"
# 4 layers of 256 channels: 5.3M parameters, a third of them the 8192-token embedding
n_layer = 4
n_head = 4
n_embd = 256
block_size = 256  # a TinyStories story is ~200 tokens
dropout = 0.1  # the shared sample holds only ~0.7M tokens; a few epochs overfit without it
batch_size = 16
gradient_accumulation_steps = 1
max_iters = 600
learning_rate = 2e-3  # small models tolerate (and need) larger steps than GPT-2 small's 6e-4
min_lr = 2e-4
warmup_iters = 50
eval_interval = 100
eval_iters = 20
log_interval = 10
ckpt_interval = 100
