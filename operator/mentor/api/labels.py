"""Every label, annotation, finalizer and resource name Mentor reads or writes on objects.

They are part of the contract: an operator restart, a second replica, the CLI and the dashboards
all find a job's children by these keys, so each is written once, here.
"""

from __future__ import annotations

# On every child of a job (its pods and its Service): who it belongs to.
JOB_NAME = "mentor.dev/job-name"
JOB_KIND = "mentor.dev/job-kind"
# On every pod: its place in the gang and the attempt (gang restart) it belongs to.
NODE_RANK = "mentor.dev/node-rank"
ATTEMPT = "mentor.dev/attempt"
# On every pod: the trainer config it was started with. The pod's downward API volume gives it to
# torchrun as a file, so a job needs no ConfigMap, and a pod from before an edit of a suspended
# job shows the config it ran.
CONFIG = "mentor.dev/config"
# On every pod Mentor creates: the pod cannot vanish before its GPU time is in the job's ledger.
GPU_FINALIZER = "mentor.dev/gpu-accounting"

# On every trial (a TrainingJob a TuningJob owns): its parent, its number and its parameters.
TUNING_JOB = "mentor.dev/tuning-job"
TRIAL_NUMBER = "mentor.dev/trial"
TRIAL_PARAMETERS = "mentor.dev/trial-parameters"
# On every trial: a deleted trial's GPU-hours reach the TuningJob's ledger before it goes.
TRIAL_FINALIZER = "mentor.dev/trial-accounting"

# In each namespace that runs Mentor's jobs, made once by the operator (neither is any job's):
# the Secret whose token rank 0 reports with, and the NetworkPolicy around the trainer pods.
REPORT_SECRET = "mentor-report"
TRAINER_POLICY = "mentor-trainers"

# On the operator replica that holds the Lease: the chart's Service selects it.
LEADER = "mentor.dev/leader"

QUEUE_NAME = "kueue.x-k8s.io/queue-name"
# Kueue admits a job's pods as one gang: every pod of an attempt names the group and its size.
POD_GROUP_NAME = "kueue.x-k8s.io/pod-group-name"
POD_GROUP_TOTAL = "kueue.x-k8s.io/pod-group-total-count"
# Mentor replaces a failed or preempted gang with a new group itself: Kueue should finish the old
# group (and release its pods) rather than wait for replacements in it.
POD_GROUP_RETRIABLE = "kueue.x-k8s.io/retriable-in-group"

# The extended resource that is counted as GPUs, for GPU-hours and budgets.
GPU_RESOURCE = "nvidia.com/gpu"
# The resources charged as GPUs, each with its weight in GPUs, unless the operator is told others
# (MENTOR_GPU_RESOURCES, the chart's accounting.gpuResources): a MIG 1g slice is 1/7 of a GPU.
DEFAULT_GPU_WEIGHTS = {GPU_RESOURCE: 1.0, "amd.com/gpu": 1.0}
# The container that runs torchrun in every trainer pod.
TRAINER_CONTAINER = "trainer"
