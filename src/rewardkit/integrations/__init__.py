"""Glue for training frameworks: `rewardkit.integrations.trl.RewardFunction` is a reward function
that TRL's ``GRPOTrainer`` and ``RLOOTrainer`` accept as it is (see docs/integrations/trl.md)."""
