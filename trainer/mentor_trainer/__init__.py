"""The program that runs inside every Mentor pod, as `torchrun -m mentor_trainer --config FILE`;
and, for a trainer of your own, the calls that give it what Mentor gives its own
(mentor_trainer.api): report, checkpoint_dir, output_dir, should_stop, fail."""

from mentor_trainer.api import checkpoint_dir, fail, output_dir, report, should_stop

__all__ = ["checkpoint_dir", "fail", "output_dir", "report", "should_stop"]
