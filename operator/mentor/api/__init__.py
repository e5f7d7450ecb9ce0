"""The Mentor API (mentor.dev/v1alpha1): the one schema source for the CRDs, the operator, the
local runner and the trainer."""

from mentor.api.base import ApiModel, Rule
from mentor.api.kinds import GROUP, KINDS, VERSION, Kind, TrainingJob
from mentor.api.status import Condition, ConditionType, JobStatus, Phase, Progress, Reason
from mentor.api.training import TrainerConfig, TrainingJobSpec

__all__ = [
    "GROUP", "KINDS", "VERSION", "ApiModel", "Condition", "ConditionType", "JobStatus", "Kind",
    "Phase", "Progress", "Reason", "Rule", "TrainerConfig", "TrainingJob", "TrainingJobSpec",
]
