"""Tests of rewardkit.eval, one file per module (a package, so that names such as
``test_command.py`` may repeat in other areas' test folders)."""
