"""A test callback: every task's result, by task name, into the JSON file named by NOMADGS_TEST_RESULTS."""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.results: dict[str, object] = {}

    def _record(self, result: object, failed: bool) -> None:
        self.results[result._task.get_name()] = dict(result._result, failed=failed)  # type: ignore[attr-defined]

    def v2_runner_on_ok(self, result: object) -> None:
        self._record(result, False)

    def v2_runner_on_failed(self, result: object, ignore_errors: bool = False) -> None:
        self._record(result, True)

    def v2_playbook_on_stats(self, stats: object) -> None:
        with open(os.environ["NOMADGS_TEST_RESULTS"], "w", encoding="utf-8") as f:
            json.dump(self.results, f, default=str)
