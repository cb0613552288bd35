# GPT-2 medium (350M with GPT-2's vocabulary) with the assignment's 128-token context, for one GPU.
#   python prepare.py --dataset=tinystories --tokenizer=gpt2 --out_dir=data/tinystories-gpt2  # full dataset, hub
#   python train.py config/gpt2_medium.py
out_dir = "out-gpt2-medium"
data_dir = "data/tinystories-gpt2"  # GPT-2's own 50,257-token vocabulary
n_layer = 24
n_head = 16
n_embd = 1024
block_size = 128
dropout = 0.0
batch_size = 16
gradient_accumulation_steps = 32  # 65,536 tokens per optimizer step: larger models like larger batches
max_iters = 10000
learning_rate = 3e-4  # GPT-3's paper lowers the rate as the model grows
min_lr = 3e-5
warmup_iters = 500
eval_interval = 500
eval_iters = 100
log_interval = 20
ckpt_interval = 500
