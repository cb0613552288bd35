# GPT-2 small (124M with GPT-2's vocabulary) with the assignment's 128-token context, for one GPU.
#   python prepare.py --dataset=tinystories --tokenizer=gpt2 --out_dir=data/tinystories-gpt2  # full dataset, hub
#   python train.py config/gpt2_small.py
# Many GPUs: torchrun --standalone --nproc_per_node=8 train.py config/gpt2_small.py
# (accumulation steps are shared among the processes, so the token batch stays the same).
out_dir = "out-gpt2-small"
data_dir = "data/tinystories-gpt2"  # GPT-2's own 50,257-token vocabulary
n_layer = 12
n_head = 12
n_embd = 768
block_size = 128
dropout = 0.0
# The assignment's micro-batch of 16 x 128 tokens leaves a big GPU mostly idle (MFU ~10% on an H200,
# README); --batch_size=64 --gradient_accumulation_steps=4 is the same optimizer step in fewer, larger pieces.
batch_size = 16
gradient_accumulation_steps = 16  # 16 x 16 x 128 = 32,768 tokens per optimizer step
max_iters = 20000  # ~655M tokens: about 1.4 epochs of the full TinyStories
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 500
eval_interval = 500
eval_iters = 100
log_interval = 20
ckpt_interval = 500
