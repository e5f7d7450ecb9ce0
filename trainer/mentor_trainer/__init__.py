"""The program that runs inside every Mentor pod, as `torchrun -m mentor_trainer --config FILE`."""
