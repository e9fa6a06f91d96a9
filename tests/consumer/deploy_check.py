"""Checks the deployment definitions offline, and prints the command each shard would run.

    python tests/consumer/deploy_check.py k8s deploy/kubernetes/job.yaml 1.33
    python tests/consumer/deploy_check.py batch deploy/aws-batch/job-definition.json deploy/aws-batch/submit-job.json

k8s: validates the manifest against Kubernetes' OpenAPI schema of that version (kubernetes-validate, strict:
unknown fields are errors), checks it is an Indexed Job whose completions, parallelism and --shard N agree and
whose memory limit leaves room above --memory-limit, and prints {"shards": [[argv of pod K], ...]} with the
`$(VAR)` references expanded as the kubelet does (JOB_COMPLETION_INDEX = K).

batch: validates both files against the AWS Batch API model shipped with botocore (RegisterJobDefinition,
SubmitJob), checks that the array size equals SHARDS and the memory leaves room above --memory-limit, and prints
{"command": [...], "env": {...}, "size": N}: what each array child runs, with AWS_BATCH_JOB_ARRAY_INDEX to add.

Exits non-zero with a message on the first failed check.
"""
import json
import re
import sys

UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30,
         "K": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "": 1}


def size(text):
    m = re.fullmatch(r"(\d+)([A-Za-z]*)", text.strip())
    assert m and m.group(2) in UNITS, f"not a size: {text!r}"
    return int(m.group(1)) * UNITS[m.group(2)]


def memory_limit(argv):
    """--memory-limit of an argv (the default 1GiB when absent)."""
    for i, a in enumerate(argv):
        if a == "--memory-limit":
            return size(argv[i + 1])
        if a.startswith("--memory-limit="):
            return size(a.split("=", 1)[1])
    return 1 << 30


def expand(text, env):
    """The kubelet's $(VAR) expansion: defined names are replaced, $$ is a literal $, the rest stays."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def k8s(path, version):
    import kubernetes_validate
    import yaml

    with open(path) as f:
        job = yaml.safe_load(f)
    kubernetes_validate.validate(job, version, strict=True)
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed", "not an Indexed Job"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never", "backoffLimitPerIndex needs restartPolicy: Never"
    (container,) = pod["containers"]
    n = spec["completions"]
    assert spec["parallelism"] == n, "parallelism != completions: some shards would wait"
    shards = []
    for k in range(n):
        env = {}
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = expand(var["value"], env)
            elif var["valueFrom"]["fieldRef"]["fieldPath"] == \
                    "metadata.annotations['batch.kubernetes.io/job-completion-index']":
                env[var["name"]] = str(k)
        argv = [expand(a, env) for a in container.get("command", []) + container["args"]]
        i = argv.index("--shard")
        assert argv[i + 1] == f"{k}/{n}", f"pod {k} runs --shard {argv[i + 1]}, not {k}/{n}"
        shards.append(argv)
    limit = size(container["resources"]["limits"]["memory"])
    wanted = memory_limit(shards[0])
    assert limit >= wanted * 1.25, f"memory limit {limit} leaves too little above --memory-limit {wanted}"
    assert container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"]
    # The exit codes whose pods are not retried (FailIndex), and whether other failures are (a per-index limit).
    never = sorted(code for rule in spec.get("podFailurePolicy", {}).get("rules", [])
                   if rule["action"] == "FailIndex" and "onExitCodes" in rule
                   and rule["onExitCodes"]["operator"] == "In"
                   for code in rule["onExitCodes"]["values"])
    assert spec.get("backoffLimitPerIndex", 0) > 0, "no retries at all"
    print(json.dumps({"shards": shards, "never_retried": never}))


def batch(definition_path, submit_path):
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("batch")
    with open(definition_path) as f:
        definition = json.load(f)
    with open(submit_path) as f:
        submit = json.load(f)
    validate_parameters(definition, model.operation_model("RegisterJobDefinition").input_shape)
    validate_parameters(submit, model.operation_model("SubmitJob").input_shape)
    assert submit["jobDefinition"] == definition["jobDefinitionName"]
    props = definition["containerProperties"]
    env = {e["name"]: e["value"] for e in props.get("environment", [])}
    env.update({e["name"]: e["value"] for e in submit.get("containerOverrides", {}).get("environment", [])})
    n = submit["arrayProperties"]["size"]
    assert env["SHARDS"] == str(n), f"SHARDS={env['SHARDS']} but the array has {n} children"
    memory = {r["type"]: r["value"] for r in props["resourceRequirements"]}["MEMORY"]
    wanted = memory_limit(props["command"][-1].split())
    assert int(memory) << 20 >= wanted * 1.25, f"MEMORY {memory} MiB leaves too little above {wanted}"
    # The exit codes that end the job without a retry: EXIT rules before the catch-all RETRY.
    rules = definition["retryStrategy"]["evaluateOnExit"]
    assert rules[-1] == {"onReason": "*", "action": "RETRY"}, "everything else must be retried"
    assert definition["retryStrategy"]["attempts"] > 1, "no retries at all"
    never = sorted(int(r["onExitCode"]) for r in rules[:-1] if r["action"] == "EXIT")
    print(json.dumps({"command": props["command"], "env": env, "size": n, "never_retried": never}))


if __name__ == "__main__":
    {"k8s": k8s, "batch": batch}[sys.argv[1]](*sys.argv[2:])
