"""Nomad's plan diff in words: as `nomad job plan` prints it, changed fields, and the before/after pair Ansible's
--diff shows."""

from __future__ import annotations

import difflib

from nomad_gpustack.nomad.plandiff import changed_fields, diff_texts, format_job_diff

EDITED = {
    "Type": "Edited",
    "ID": "qwen",
    "Fields": [
        {"Type": "None", "Name": "Priority", "Old": "50", "New": "50"},
        {"Type": "Added", "Name": "Meta[owner]", "Old": "", "New": "ml"},
    ],
    "Objects": [],
    "TaskGroups": [
        {
            "Type": "Edited",
            "Name": "inference",
            "Updates": {"create/destroy update": 1, "ignore": 0},
            "Fields": [{"Type": "Edited", "Name": "Count", "Old": "1", "New": "2"}],
            "Objects": [],
            "Tasks": [
                {
                    "Type": "Edited",
                    "Name": "vllm",
                    "Annotations": ["forces create/destroy update"],
                    "Fields": [],
                    "Objects": [
                        {
                            "Type": "Edited",
                            "Name": "Config",
                            "Fields": [
                                {"Type": "Edited", "Name": "image", "Old": "vllm:0.18", "New": "vllm:0.19"},
                                {"Type": "Deleted", "Name": "args[3]", "Old": "--enforce-eager", "New": ""},
                                {"Type": "None", "Name": "args[0]", "Old": "--port", "New": "--port"},
                            ],
                            "Objects": [],
                        }
                    ],
                }
            ],
        }
    ],
}


def test_changed_fields_name_their_place_and_skip_context() -> None:
    assert changed_fields(EDITED) == [
        'Meta[owner]: "ml" (added)',
        'Task Group "inference" (1 create/destroy update) > Count: "1" => "2"',
        'Task Group "inference" (1 create/destroy update) > Task "vllm" (forces create/destroy update) > Config > '
        'image: "vllm:0.18" => "vllm:0.19"',
        'Task Group "inference" (1 create/destroy update) > Task "vllm" (forces create/destroy update) > Config > '
        'args[3]: "--enforce-eager" (removed)',
    ]
    assert changed_fields(None) == [] and changed_fields({"Type": "None", "ID": "x"}) == []


def test_before_and_after_differ_only_in_the_changed_fields() -> None:
    before, after = diff_texts(EDITED)
    changes = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changes == [
        '+  Meta[owner]: "ml"',
        '-    Count: "1"',
        '+    Count: "2"',
        '-        image: "vllm:0.18"',
        '-        args[3]: "--enforce-eager"',
        '+        image: "vllm:0.19"',
    ]
    assert before.startswith('Job "qwen":\n  Priority: "50"\n')
    assert '      Config:\n        image: "vllm:0.19"\n        args[0]: "--port"\n' in after


def test_a_new_job_is_all_after_and_a_removed_group_all_before() -> None:
    added = {"Type": "Added", "ID": "new", "Fields": [{"Type": "Added", "Name": "Type", "Old": "", "New": "service"}]}
    assert diff_texts(added) == ("", 'Job "new":\n  Type: "service"\n')
    removed = {
        "Type": "Edited",
        "ID": "j",
        "TaskGroups": [
            {"Type": "Deleted", "Name": "old", "Fields": [{"Type": "Deleted", "Name": "Count", "Old": "1", "New": ""}]}
        ],
    }
    before, after = diff_texts(removed)
    assert before == 'Job "j":\n  Task Group "old":\n    Count: "1"\n' and after == 'Job "j":\n'
    assert diff_texts(None) == ("", "")


def test_format_job_diff_prints_like_nomad_job_plan() -> None:
    # command/job_plan.go formatJobDiff: markers `+`, `-`, `+/-`; names and values in columns; context unmarked.
    assert format_job_diff(EDITED) == (
        '+/- Job: "qwen"\n'
        '    Priority:    "50"\n'
        '+   Meta[owner]: "ml"\n'
        '+/- Task Group: "inference" (1 create/destroy update)\n'
        '  +/- Count: "1" => "2"\n'
        '  +/- Task: "vllm" (forces create/destroy update)\n'
        "    +/- Config {\n"
        '      +/- image:   "vllm:0.18" => "vllm:0.19"\n'
        '      -   args[3]: "--enforce-eager"\n'
        '          args[0]: "--port"\n'
        "        }\n"
    )


def test_format_job_diff_expands_new_groups_and_tasks_only_when_verbose() -> None:
    added = {
        "Type": "Added",
        "ID": "new",
        "Fields": [{"Type": "Added", "Name": "Type", "Old": "", "New": "service"}],
        "TaskGroups": [
            {
                "Type": "Added",
                "Name": "g",
                "Updates": {"create": 2},
                "Fields": [{"Type": "Added", "Name": "Count", "New": "2", "Annotations": ["forces create"]}],
                "Tasks": [
                    {
                        "Type": "Added",
                        "Name": "t",
                        "Annotations": ["forces create"],
                        "Fields": [{"Type": "Added", "Name": "Driver", "New": "docker"}],
                    }
                ],
            }
        ],
    }
    assert format_job_diff(added) == '+ Job: "new"\n+ Task Group: "g" (2 create)\n  + Task: "t" (forces create)\n'
    assert format_job_diff(added, verbose=True) == (
        '+ Job: "new"\n'
        '+ Type: "service"\n'
        '+ Task Group: "g" (2 create)\n'
        '  + Count: "2" (forces create)\n'
        '  + Task: "t" (forces create)\n'
        '    + Driver: "docker"\n'
    )
    unchanged = {"Type": "None", "ID": "j", "TaskGroups": [{"Type": "None", "Name": "g", "Updates": {"ignore": 1},
                                                         "Tasks": [{"Type": "None", "Name": "t"}]}]}  # fmt: skip
    assert format_job_diff(unchanged) == 'Job: "j"\nTask Group: "g" (1 ignore)\n  Task: "t"\n'
    assert format_job_diff(None) == ""
