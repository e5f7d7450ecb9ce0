"""The search of a TuningJob, pure: which parameters the next trial gets, and which trial to prune.

Nothing is kept between calls. Every decision rebuilds an Optuna study from the trials as they
are (their parameters, intermediate eval losses and outcomes, read from the trial TrainingJobs),
then asks it. So an operator restart, or a standby taking over, decides exactly as the old
leader would have: the trials are the state. Samplers are seeded per trial number, which makes
trial N's parameters a function of the seed and the trials before it, never of how many times
the operator asked.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

from mentor.api.tuning import INTEGER, Algorithm, SearchParameter, SearchSpec
from mentor.decide.trialview import FAILED, PRUNED, RUNNING, SUCCEEDED, Trial


def grid_size(search: SearchSpec) -> int:
    """How many points the grid has, counted, never listed: 16 parameters of 64 values are
    2**96 points, which no memory holds."""
    return math.prod(len(p.options() or []) for p in search.parameters)


def grid_point(search: SearchSpec, index: int) -> dict[str, Any]:
    """The grid's point `index`, decoded from its digits (the last parameter turns fastest, as
    itertools.product walks it), so asking for trial N costs the parameters' count."""
    point: dict[str, Any] = {}
    for p in reversed(search.parameters):
        options = p.options() or []
        index, digit = divmod(index, len(options))
        point[p.key] = options[digit]
    return {p.key: point[p.key] for p in search.parameters}


def size(search: SearchSpec | None) -> int:
    """How many trials the search runs at most."""
    if search is None:
        return 1
    if search.algorithm == Algorithm.GRID:
        return min(search.max_trials, grid_size(search))
    return search.max_trials


def _distribution(p: SearchParameter) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    options = p.options()
    if options is not None:
        return CategoricalDistribution(options)
    assert p.min is not None and p.max is not None
    log = p.scale.value == "log"
    if p.path in INTEGER:
        low, high = math.ceil(p.min), math.floor(p.max)
        return IntDistribution(low, max(low, high), log=log)
    return FloatDistribution(p.min, p.max, log=log)


def distributions(search: SearchSpec) -> dict[str, Any]:
    return {p.key: _distribution(p) for p in search.parameters}


def _study(search: SearchSpec, trials: list[Trial], sampler: Any = None,
           all_running: bool = False) -> Any:
    """An in-memory Optuna study holding the trials, in trial-number order. `all_running`
    adds every trial as running: ASHA records its rungs on trials, which Optuna refuses on
    finished ones, and its verdicts do not depend on the states."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=search.objective.direction, sampler=sampler)
    dists = distributions(search)
    for t in sorted(trials, key=lambda t: t.number):
        state = {SUCCEEDED: TrialState.COMPLETE, PRUNED: TrialState.PRUNED,
                 FAILED: TrialState.FAIL}.get(t.state, TrialState.RUNNING)
        if all_running:
            state = TrialState.RUNNING
        complete = state == TrialState.COMPLETE and t.objective is not None
        try:
            study.add_trial(create_trial(
                params={k: t.params[k] for k in dists if k in t.params},
                distributions={k: d for k, d in dists.items() if k in t.params},
                value=t.objective if complete else None,
                state=state if complete or state != TrialState.COMPLETE else TrialState.FAIL,
                intermediate_values=dict(t.evals),
                user_attrs={"number": t.number},
            ))
        except ValueError:  # a value outside today's distribution: it cannot inform the sampler
            continue
    return study


def _sampler(search: SearchSpec, number: int) -> Any:
    import optuna

    seed = (search.seed + 7919 * number) % 2**32
    if search.algorithm == Algorithm.RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # constant_liar is marked experimental
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(
            seed=seed, constant_liar=True,
            n_startup_trials=max(2, min(10, search.max_trials // 4)))


def suggest(search: SearchSpec | None, trials: list[Trial], number: int) -> dict[str, Any]:
    """The parameters of trial `number`, given the trials so far (running ones included)."""
    if search is None:
        return {}
    if search.algorithm == Algorithm.GRID:
        return grid_point(search, number)
    study = _study(search, trials, _sampler(search, number))
    return dict(study.ask(distributions(search)).params)


def _pruner(search: SearchSpec) -> Any:
    import optuna

    spec = search.pruner
    if spec is None or spec.type == "none":
        return None
    if spec.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials,
                                           n_warmup_steps=spec.warmup_steps)
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=spec.min_resource, reduction_factor=spec.reduction_factor,
        min_early_stopping_rate=0, bootstrap_count=0)


def to_prune(search: SearchSpec | None, trials: list[Trial]) -> list[Trial]:
    """The running trials the pruner stops now, judged on their eval losses so far."""
    if search is None or _pruner(search) is None:
        return []
    pruner = _pruner(search)
    asha = search.pruner is not None and search.pruner.type == "asha"
    warmup = search.pruner.warmup_steps if search.pruner else 0
    study = _study(search, trials, all_running=asha)
    by_number = {t.user_attrs["number"]: t for t in study.get_trials(deepcopy=False)}
    doomed = []
    # Finished trials first, in the order they ran: ASHA's rungs fill as they did.
    for trial in sorted(trials, key=lambda t: (t.state == RUNNING, t.number)):
        frozen = by_number.get(trial.number)
        if frozen is None or not trial.evals:
            continue
        if asha:  # a rung holds each trial's loss at the rung's step, as if judged live
            verdict = False
            for step in sorted(trial.evals):
                view = copy.copy(frozen)
                view.intermediate_values = {s: v for s, v in trial.evals.items() if s <= step}
                verdict = pruner.prune(study, view)
                if verdict:
                    break
        else:
            verdict = pruner.prune(study, frozen)
        if trial.state == RUNNING and not trial.stopping and verdict \
                and max(trial.evals) >= warmup:
            doomed.append(trial)
    return doomed


def best(trials: list[Trial], direction: str = "minimize") -> Trial | None:
    done = [t for t in trials if t.state == SUCCEEDED and t.objective is not None]
    if not done:
        return None
    sign = 1 if direction == "minimize" else -1
    return min(done, key=lambda t: (sign * (t.objective or 0.0), t.number))
