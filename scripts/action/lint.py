"""Turns each composite action (action.yml, post/action.yml) into the
workflow actionlint can check: a reusable workflow whose `workflow_call`
inputs are the action's inputs and whose one job runs the action's steps,
so every `${{ inputs.* }}`, `github.*` and `steps.*` expression, every
step's keys and every `run:` block (through shellcheck) is checked. Writes
the generated files into the directory given and prints their paths.

    python lint.py <out-dir> <action.yml>...
"""

import sys
from pathlib import Path

import yaml


def as_workflow(action: dict) -> dict:
    inputs = {
        name: {
            "description": spec.get("description", name),
            "type": "string",
            "required": False,
            **({"default": str(spec["default"])} if "default" in spec and "${{" not in str(spec["default"]) else {}),
        }
        for name, spec in (action.get("inputs") or {}).items()
    }
    runs = action.get("runs") or {}
    if runs.get("using") != "composite":
        raise SystemExit("only composite actions are checked")
    steps = []
    for step in runs.get("steps") or []:
        step = dict(step)
        # In an action, GITHUB_ACTION_PATH locates the action's own files.
        steps.append(step)
    outputs = {
        name: {"description": spec.get("description", name), "value": "${{ jobs.action.outputs.%s }}" % name}
        for name, spec in (action.get("outputs") or {}).items()
    }
    job_outputs = {
        name: spec["value"] for name, spec in (action.get("outputs") or {}).items()
    }
    job = {"runs-on": "ubuntu-latest", "steps": steps}
    if job_outputs:
        job["outputs"] = job_outputs
    call = {"inputs": inputs}
    if outputs:
        call["outputs"] = outputs
    return {"name": action.get("name", "action"), "on": {"workflow_call": call}, "jobs": {"action": job}}


def main() -> None:
    out = Path(sys.argv[1])
    for name in sys.argv[2:]:
        action = yaml.safe_load(Path(name).read_text())
        for key in ("name", "description", "runs"):
            if key not in action:
                raise SystemExit(f"{name}: no {key}")
        target = out / (name.replace("/", "_").replace(".yml", "") + ".workflow.yml")
        target.write_text(yaml.safe_dump(as_workflow(action), sort_keys=False))
        print(target)


if __name__ == "__main__":
    main()
