"""`nomad.scaling` made the group's `scaling` block: Nomad's ScalingPolicy, with a policy for the Nomad Autoscaler.

The policy is written in the JSON shape Nomad itself gives an HCL `policy {}` block (jobspec2's BlocksAsAttrs,
nomad `jobspec2/hclutil/blockattrs.go`): every block a list with one element per occurrence, a labelled block
`{label: [body]}`. The Autoscaler reads only that shape (nomad-autoscaler `policy/nomad/parser.go` `parseBlock`
drops a plain object without a word), so `check`, `strategy` and `schedule` are always lists here.

Checks (nomad-autoscaler 0.5: the "safest" vote wins, up over none over down, the highest count within one):
- `in_flight`: a target-value check on the gateway's requests per ready replica (in flight and held for a
  model at zero), averaged over `query_window`; `queue`: the same on the engine's own waiting requests.
- a schedule (GPUStack's `scaling_schedule`): an always-on fixed-value check at `baseline_replicas` and one
  fixed-value check per window, with the Autoscaler's `schedule { start, duration }`. Both raise a floor
  the metric scales above; inside a window the window's count wins over the baseline's, so a window may not
  ask for fewer replicas than the baseline (refused, with how to write it instead).

Every query is total (`or vector(0)`): an empty answer is not "no load" to the Autoscaler but an error that
skips the whole evaluation (`policy/check.go`), and a division by zero replicas a NaN it refuses.

Scale to zero (`min: 0` with `idle_after`) is the gateway's: it scales the group to 0 after `idle_after`
without a request and back when one comes (job meta META_IDLE_AFTER / META_SCALE_GROUP). The Autoscaler must
not undo either: the in-flight query counts one request while the model had any in the last `idle_after` (less
IDLE_MARGIN, so Prometheus' scrape delay cannot keep it awake after the gateway put it to sleep), and counts
only held requests while it is at zero, so it wakes a model when the gateway does, never on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..contract.metadata import GATEWAY_HELD, GATEWAY_IN_FLIGHT, GATEWAY_INSTANCES, GATEWAY_REQUESTS
from ..durations import HOUR, MINUTE, format_duration
from ..errors import InputError
from ..spec.deployment import Deployment
from ..spec.scaling import ScalingKeys, ScalingSchedule
from ..spec.specfile import Sourced

APM_SOURCE = "prometheus"  # the name of the Autoscaler agent's `apm` block the checks ask
DEFAULT_QUERY_WINDOW = MINUTE  # the Autoscaler's own default (policy.DefaultQueryWindow)
MAX_QUERY_WINDOW = 3 * HOUR  # one point a second (the Prometheus APM's step): Prometheus answers <= 11,000
IDLE_MARGIN = MINUTE  # the in-flight floor ends this long before idle_after: scrape and evaluation delays
MIN_IDLE_AFTER = 2 * MINUTE
DEFAULT_TARGET_QUEUE = 1

# The gateway's series (declared by serving/gateway/metrics.py with the same contract names;
# tests/test_e2e_scaling_queries.py scrapes the gateway's own metrics with them). Labels: model (and upstream).
GATEWAY_REQUESTS_TOTAL = GATEWAY_REQUESTS + "_total"


@dataclass(frozen=True)
class EngineLoad:
    """How many requests an engine serves at once, and the gauge of those waiting for a slot."""

    flags: tuple[str, ...]  # the flags that set its concurrency
    default: int | None  # its concurrency when no flag sets it; None: it depends on the GPU's memory
    default_text: str  # where the default comes from, for the note render and validate print
    queue_metric: str


ENGINES = {
    # vllm/engine/arg_utils.py: max_num_seqs 256 on most GPUs, 1024 on those of 70 GiB or more but A100.
    "vllm": EngineLoad(
        ("--max-num-seqs",),
        256,
        "vLLM's default --max-num-seqs (1024 on GPUs of 70 GiB or more other than the A100)",
        "vllm:num_requests_waiting",
    ),
    # llama-server --help: "--parallel N: number of server slots (default: -1, -1 = auto)", and auto is 4
    # ("n_parallel is set to auto, using n_parallel = 4"). --metrics serves the deferred requests' gauge.
    "llama.cpp": EngineLoad(
        ("--parallel", "-np"), 4, "llama.cpp's --parallel (auto: 4 slots)", "llamacpp:requests_deferred"
    ),
    # SGLang sizes --max-running-requests from the KV cache it finds room for: no fixed default.
    "sglang": EngineLoad(("--max-running-requests",), None, "", "sglang:num_queue_reqs"),
}


@dataclass(frozen=True)
class ScalingPlan:
    """The group's count and `scaling` block, every default applied (durations in nanoseconds)."""

    count: int  # the group's Count: the starting number of replicas
    min: int
    max: int
    enabled: bool
    policy: dict[str, Any] | None  # None: no check (the gateway's scale to zero alone)
    idle_after: int | None  # scale to zero after this long without a request; None: never
    notes: tuple[str, ...] = ()


def _label(model: str) -> str:
    return f'{{model="{model}"}}'  # model names are [A-Za-z0-9._-] (spec.deployment): nothing to escape


def in_flight_query(model: str, window: int, idle_window: int | None = None) -> str:
    """Requests per ready replica of `model` at the gateway: in flight and held, averaged over `window`.

    With `idle_window` (scale to zero), at least one request while the model had any in that window.
    """
    label, w = _label(model), format_duration(window)
    load = (
        f"(sum(avg_over_time({GATEWAY_IN_FLIGHT}{label}[{w}])) or vector(0))"
        f" + (sum(avg_over_time({GATEWAY_HELD}{label}[{w}])) or vector(0))"
    )
    if idle_window is not None:
        recent = f"sum(increase({GATEWAY_REQUESTS_TOTAL}{label}[{format_duration(idle_window)}])) > bool 0"
        load = f"clamp_min({load}, scalar({recent} or vector(0)))"
    else:
        load = f"({load})"
    # Several gateways each report every instance: the most any of them sees.
    return f"{load} / clamp_min(max({GATEWAY_INSTANCES}{label}) or vector(0), 1)"


def queue_query(metric: str, model: str, window: int) -> str:
    """Requests waiting per replica in `model`'s engines, averaged over `window`.

    `model` is the label Prometheus gives an engine's series from its Consul service (the relabelling of
    examples/prometheus); one scrape target is one replica, whatever labels the engine adds (vLLM's `engine`).
    """
    series = f"{metric}{_label(model)}"
    return f"avg(sum by (instance) (avg_over_time({series}[{format_duration(window)}]))) or vector(0)"


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _flag_value(argv: Sequence[str], flags: tuple[str, ...]) -> str | None:
    """The value of the last of `flags` on the command line (`--flag v` or `--flag=v`), as the engine keeps it."""
    found = None
    for i, token in enumerate(argv):
        key, eq, value = token.partition("=")
        if key in flags:
            found = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return found


class _Planner:
    """The checks of one deployment's `nomad.scaling`, each refusal located at the key to change."""

    def __init__(self, sourced: Sourced[Deployment], backend: str, argv: Sequence[str], metrics: bool) -> None:
        self.sourced = sourced
        self.d = sourced.spec
        keys = self.d.nomad.scaling
        assert keys is not None
        self.keys: ScalingKeys = keys
        self.backend = backend
        self.engine = ENGINES.get(backend.lower())
        self.argv = argv
        self.metrics = metrics
        self.notes: list[str] = []

    def fail(self, key: str | tuple[str | int, ...], message: str, hint: str) -> InputError:
        path = (key,) if isinstance(key, str) else key
        return self.sourced.error(("nomad", "scaling", *path), message, hint=hint)

    def bounds(self) -> tuple[int, int, int]:
        """(min, max, count): the count is `replicas` when written, else the default 1 raised to min."""
        k = self.keys
        low = 1 if k.min is None else k.min
        if k.max < 1:
            raise self.fail("max", "max: 0 never runs the model", "write the most replicas the model may have")
        if low > k.max:
            raise self.fail("min", f"min ({low}) is more than max ({k.max})", "make min at most max")
        if "replicas" not in self.d.model_fields_set:
            return low, k.max, max(low, 1)
        count = self.d.replicas
        if not low <= count <= k.max:
            raise self.sourced.error(
                ("replicas",),
                f"replicas ({count}) is outside nomad.scaling's min {low} and max {k.max}; Nomad refuses such a job",
                hint="with nomad.scaling, replicas is the starting count: write one from min to max, or leave it out",
            )
        return low, k.max, count

    def idle(self, low: int) -> int | None:
        k = self.keys
        if k.idle_after is None:
            if low == 0:
                raise self.fail(
                    "min",
                    "min: 0 needs idle_after: a model at 0 replicas is woken by the gateway, which scales to zero "
                    "only models with idle_after",
                    "add idle_after: 15m (scale to zero after 15 minutes without a request), or make min 1",
                )
            return None
        if low != 0:
            raise self.fail(
                "idle_after", f"idle_after scales the model to zero, below min ({low})", "write min: 0 with it"
            )
        if k.idle_after < MIN_IDLE_AFTER:
            raise self.fail(
                "idle_after",
                f"idle_after ({format_duration(k.idle_after)}) is shorter than {format_duration(MIN_IDLE_AFTER)}",
                "loading a model takes minutes: write e.g. 15m",
            )
        if k.schedule is not None and k.schedule.enabled:
            raise self.fail(
                "schedule",
                "a schedule keeps replicas running that idle_after would scale to zero: the two would undo each other",
                "choose one: leave out the schedule, or idle_after (with min 1)",
            )
        return k.idle_after

    def window(self) -> int:
        window = self.keys.query_window or DEFAULT_QUERY_WINDOW
        if window > MAX_QUERY_WINDOW:
            raise self.fail(
                "query_window",
                f"query_window ({format_duration(window)}) is longer than 3h: the Autoscaler asks Prometheus for a "
                "point a second, and Prometheus answers at most 11,000",
                "write at most 3h, e.g. 1m",
            )
        return window

    def target_in_flight(self) -> float | int:
        k = self.keys
        if k.target_in_flight is not None:
            return _number(k.target_in_flight)
        engine = self.engine
        written = _flag_value(self.argv, engine.flags) if engine else None
        if written is not None and written.isdigit() and int(written) > 0:
            return int(written)
        if engine is None or engine.default is None or written not in (None, "-1"):  # -1: llama.cpp's auto
            raise self.fail(
                (),
                f"nomadgs cannot tell how many requests {self.backend} serves at once, the default of target_in_flight",
                "write target_in_flight: the requests one replica should have in flight (e.g. its batch size)",
            )
        self.notes.append(
            f"nomad.scaling: the Autoscaler aims at {engine.default} requests in flight per replica, "
            f"{engine.default_text}; target_in_flight sets another number"
        )
        return engine.default

    def metric_check(self, low: int, idle_after: int | None) -> dict[str, Any] | None:
        k = self.keys
        if k.metric != "in_flight" and k.target_in_flight is not None:
            raise self.fail("target_in_flight", f"metric: {k.metric} does not read target_in_flight", _METRIC_HINT)
        if k.metric != "queue" and k.target_queue is not None:
            raise self.fail("target_queue", f"metric: {k.metric} does not read target_queue", _METRIC_HINT)
        if k.metric == "none":
            return None
        window = self.window()
        if k.metric == "in_flight":
            idle_window = idle_after - IDLE_MARGIN if idle_after is not None else None
            query, target = in_flight_query(self.d.name, window, idle_window), self.target_in_flight()
        else:
            query, target = self.queue(low, window), _number(k.target_queue or DEFAULT_TARGET_QUEUE)
        body = {
            "source": APM_SOURCE,
            "query": query,
            "query_window": format_duration(window),
            "strategy": [{"target-value": [{"target": target}]}],
        }
        return {k.metric: [body]}

    def queue(self, low: int, window: int) -> str:
        if self.engine is None:
            raise self.fail(
                "metric",
                f"nomadgs knows no queue metric of {self.backend} (it knows vLLM's, SGLang's and llama.cpp's)",
                "write metric: in_flight, the gateway's requests per replica",
            )
        if not self.metrics:
            raise self.fail(
                "metric",
                "metric: queue reads the engine's Prometheus metrics, which this deployment does not serve",
                "turn nomad.metrics on, or write metric: in_flight",
            )
        if low == 0:
            raise self.fail(
                "metric",
                "the engine's queue vanishes with its last replica: at zero replicas nothing would wake the model",
                "write metric: in_flight (the gateway's requests, held ones included) with min: 0",
            )
        return queue_query(self.engine.queue_metric, self.d.name, window)

    def schedule_checks(self, low: int, high: int) -> list[dict[str, Any]]:
        schedule = self.keys.schedule
        if schedule is None or not schedule.enabled:
            return []
        self._in_bounds(schedule.baseline_replicas, low, high, ("schedule", "baseline_replicas"))
        checks = [{"schedule-baseline": [_fixed(schedule.baseline_replicas)]}]
        for index, rule in enumerate(schedule.rules):
            where: tuple[str | int, ...] = ("schedule", "rules", index)
            duration = self._duration(schedule, index)
            self._in_bounds(rule.replicas, low, high, (*where, "replicas"))
            if rule.replicas < schedule.baseline_replicas:
                raise self.fail(
                    (*where, "replicas"),
                    f"a window of {rule.replicas} replicas, below baseline_replicas ({schedule.baseline_replicas}): "
                    "the Autoscaler keeps the highest count asked for, so the baseline would win",
                    "make baseline_replicas the lowest count (e.g. the night's) and write windows for the busier hours",
                )
            window = {"start": rule.start_cron, "duration": format_duration(duration)}
            body = {"schedule": [window], **_fixed(rule.replicas)}
            checks.append({f"schedule-{rule.name or index + 1}": [body]})
        return checks

    def _duration(self, schedule: ScalingSchedule, index: int) -> int:
        rule = schedule.rules[index]
        if (rule.duration is None) == (rule.duration_seconds is None):
            raise self.fail(
                ("schedule", "rules", index),
                "a window needs its length: duration_seconds or duration, one of them",
                "write duration_seconds: 28800 (GPUStack's key) or duration: 8h",
            )
        return rule.duration if rule.duration is not None else (rule.duration_seconds or 0) * 10**9

    def _in_bounds(self, replicas: int, low: int, high: int, key: tuple[str | int, ...]) -> None:
        if not low <= replicas <= high:
            raise self.fail(
                key,
                f"{replicas} replicas is outside min {low} and max {high}: the Autoscaler would stop at the bound",
                "keep it from min to max, or widen them",
            )

    def plan(self) -> ScalingPlan:
        k = self.keys
        low, high, count = self.bounds()
        idle_after = self.idle(low)
        checks = [c for c in (self.metric_check(low, idle_after),) if c is not None]
        checks += self.schedule_checks(low, high)
        if not checks and idle_after is None:
            raise self.fail("metric", "metric: none without a schedule leaves nothing to scale by", _METRIC_HINT)
        if not checks and k.enabled:
            raise self.fail(
                "enabled",
                "the policy has no check for the Autoscaler to run (metric: none, no schedule)",
                "leave enabled out: the gateway's scale to zero needs no Autoscaler",
            )
        policy: dict[str, Any] | None = None
        if checks:
            policy = {}
            if k.evaluation_interval is not None:
                policy["evaluation_interval"] = format_duration(k.evaluation_interval)
            if k.cooldown is not None:
                policy["cooldown"] = format_duration(k.cooldown)
            policy["check"] = checks
        enabled = bool(checks) if k.enabled is None else k.enabled
        return ScalingPlan(count, low, high, enabled, policy, idle_after, tuple(self.notes))


_METRIC_HINT = "metric: in_flight reads target_in_flight, metric: queue target_queue; none scales by the schedule"


def _fixed(value: int) -> dict[str, Any]:
    return {"strategy": [{"fixed-value": [{"value": value}]}]}


def plan_scaling(
    sourced: Sourced[Deployment], backend: str, argv: Sequence[str], *, metrics: bool
) -> ScalingPlan | None:
    """The deployment's scaling plan; None without `nomad.scaling`. InputError located at the key to change.

    `argv` is the engine's command line (its concurrency flag sets the default target), `metrics` whether the
    engine serves Prometheus metrics (the queue metric needs them).
    """
    if sourced.spec.nomad.scaling is None:
        return None
    return _Planner(sourced, backend, argv, metrics).plan()
