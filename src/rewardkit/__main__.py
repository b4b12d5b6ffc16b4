from rewardkit.cli import entry

entry()
