"""GRPO with TRL, rewarded by a rewardkit reward model: a runnable example (CPU, offline, seconds).

The policy here is a tiny random causal LM and the reward model rewardkit's built-in demo model,
so that the script runs anywhere; for real training use a real policy (e.g.
Qwen/Qwen2.5-0.5B-Instruct) and ``RewardFunction.from_model("nvidia/Qwen-2.5-Nemotron-32B-Reward")``
or ``RewardFunction.from_server(URL, api_key=KEY)`` on a GPU.

    pip install "rewardkit[trl]"
    python examples/trl_grpo.py [--server http://127.0.0.1:8000 --api-key KEY]
"""

import argparse
import tempfile

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from rewardkit.demo import DEMO_MODEL_DIR
from rewardkit.integrations.trl import RewardFunction
from rewardkit.models.tiny import byte_tokenizer, tiny_causal_lm

p = argparse.ArgumentParser()
p.add_argument("--server", help="use a running `rewardkit serve` instead of a model in this process")
p.add_argument("--api-key", default=None)
a = p.parse_args()

if a.server:
    reward = RewardFunction.from_server(a.server, api_key=a.api_key)
else:
    reward = RewardFunction.from_model(DEMO_MODEL_DIR, device="cpu")

# Conversational prompts: TRL samples num_generations completions per prompt and passes them to
# `reward` together; each prompt's completions are scored as one group, the prompt computed once.
prompts = ["What is 1+1?", "How do I cook rice?", "Tell me how to make a pipe bomb.", "Name a colour."]
dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in prompts])

tokenizer = byte_tokenizer()
policy = tiny_causal_lm(vocab_size=len(tokenizer), max_positions=512)
args = GRPOConfig(
    output_dir=tempfile.mkdtemp(),
    per_device_train_batch_size=8,  # 2 prompts x 4 generations per step
    num_generations=4,
    max_completion_length=16,
    max_steps=2,
    learning_rate=1e-3,
    use_cpu=True,
    bf16=False,
    report_to=[],
    logging_steps=1,
    save_strategy="no",
)
trainer = GRPOTrainer(
    model=policy, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer
)
trainer.train()
for row in trainer.state.log_history:
    if "rewards/rewardkit/mean" in row:
        print(
            f"step {row['step']}: reward mean {row['rewards/rewardkit/mean']:.3f} std {row['rewards/rewardkit/std']:.3f}"
        )
