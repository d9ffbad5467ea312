# Copyright: nomad-gpustack developers
# Apache License 2.0 (see the repository's LICENSE)
"""Controller side of `nomad_gpustack.nomad.model`: tells the module where an inline `definition` was written.

A deployment file's problems name its file and line. An inline definition has no file of its own, so this
plugin passes the playbook's path and the line of each value of the definition (from the task's source, as
the controller knows it) to the module, whose messages then point into the playbook. Everything else is the
module's work.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

try:  # ansible-core >= 2.19 tags every value it loads with where it was written
    from ansible._internal._datatag._tags import Origin
except ImportError:  # older ansible-core: the task's own line only
    Origin = None

MODULE = "nomad_gpustack.nomad.model"
ORIGIN = "_definition_origin"  # the module's option for it


def _origin_of(value):
    if Origin is None:
        return None
    origin = Origin.get_tag(value)
    if origin is None or not origin.path or not origin.line_num:
        return None
    return origin


def _walk(value, path, marks, key_marks, file):
    """[path, line, column] of every value (and key) of the definition written in `file`."""
    origin = _origin_of(value)
    if origin is not None and origin.path == file:
        marks.append([list(path), origin.line_num, origin.col_num or 0])
    if isinstance(value, dict):
        for key, item in value.items():
            key_origin = _origin_of(key)
            if key_origin is not None and key_origin.path == file:
                key_marks.append([[*path, str(key)], key_origin.line_num, key_origin.col_num or 0])
            _walk(item, (*path, str(key)), marks, key_marks, file)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, (*path, index), marks, key_marks, file)


def definition_origin(task, definition):
    """Where the task's inline definition was written: file, task name, and the lines of its values."""
    task_path = task.get_path() or ""
    file, separator, line = task_path.rpartition(":")
    if not separator or not line.isdigit():
        file, line = task_path, ""
    marks, key_marks = [], []
    root = _origin_of(definition)
    if root is not None:
        file = root.path
        _walk(definition, (), marks, key_marks, file)
    elif line:
        marks.append([[], int(line), 0])  # no value carries its line: the task's line for every problem
    return dict(file=file or None, task=task.get_name(), marks=marks, key_marks=key_marks)


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        if ORIGIN in args:  # ours to set: a value from the task would misplace every problem it reports
            return dict(
                result,
                failed=True,
                msg=f"Unsupported parameters for ({MODULE}) module: {ORIGIN}. It is set by the collection itself, "
                "from where an inline definition is written in the playbook.",
            )
        if args.get("definition") is not None:
            args[ORIGIN] = definition_origin(self._task, args["definition"])
        result = merge_hash(result, self._execute_module(module_args=args, task_vars=task_vars))
        # The origin is ours, not the user's: keep it out of the invocation shown with -v.
        result.get("invocation", {}).get("module_args", {}).pop(ORIGIN, None)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
