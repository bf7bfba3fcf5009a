"""The Helm chart's configuration contract: for every Wharf container the
chart renders, its configuration file (the ConfigMap) and its environment
(values, the pod's name, the Secret's keys) pass its binary's
--check-config.

    python3 tests/deploy/helm_contract.py RENDERED.yaml BIN_DIR

A Secret the chart does not render (existingSecret) is stood in for by
placeholders of the right shape. Paths inside the image map back to the
repository (/etc/wharf/profiles: commander/profiles).
"""

import os
import re
import sys
import tempfile

import yaml

from check_config import check

STAND_IN_SECRET = {
    "auth-secret": "a-stand-in-secret-of-enough-length",
    "store-url": "postgres://wharf:secret@postgresql:5432/wharf",
    "api-key-hashes": "sha256:" + "ab" * 32,
}
IMAGE_PATHS = {"/etc/wharf/profiles": "commander/profiles"}


def main(rendered_path, bin_dir):
    documents = [d for d in yaml.safe_load_all(open(rendered_path)) if d]
    config_maps = {d["metadata"]["name"]: d["data"] for d in documents if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d.get("stringData", {}) for d in documents if d["kind"] == "Secret"}
    checked = 0
    with tempfile.TemporaryDirectory() as work:
        for workload in documents:
            if workload["kind"] not in ("StatefulSet", "Deployment"):
                continue
            pod = workload["spec"]["template"]["spec"]
            pod_name = workload["metadata"]["name"] + "-0"
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for container in pod["containers"]:
                command = container.get("command") or []
                if not command or not command[0].startswith("/usr/local/bin/wharf"):
                    continue
                # Mounted ConfigMaps become files; their mount paths map to them.
                mapped = dict(IMAGE_PATHS)
                for mount in container.get("volumeMounts", []):
                    source = volumes[mount["name"]].get("configMap")
                    if source and source["name"] in config_maps:
                        directory = os.path.join(work, workload["metadata"]["name"], mount["name"])
                        os.makedirs(directory, exist_ok=True)
                        for key, text in config_maps[source["name"]].items():
                            with open(os.path.join(directory, key), "w") as f:
                                f.write(text)
                        mapped[mount["mountPath"]] = directory
                env = {}
                for var in container.get("env", []):
                    if "value" in var:
                        value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), ""), var["value"])
                    elif "fieldRef" in var["valueFrom"]:
                        assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
                        value = pod_name
                    else:
                        ref = var["valueFrom"]["secretKeyRef"]
                        value = secrets.get(ref["name"], STAND_IN_SECRET)[ref["key"]]
                    for inside, outside in mapped.items():
                        if value == inside or value.startswith(inside + "/"):
                            value = outside + value[len(inside):]
                    env[var["name"]] = value
                binary = os.path.join(bin_dir, os.path.basename(command[0]))
                label = f"helm {workload['kind']} {workload['metadata']['name']}"
                check(label, binary, command[1:] + (container.get("args") or []), env)
                checked += 1
    if checked != 3:
        sys.exit(f"expected the three Wharf workloads in the chart, checked {checked}")


if __name__ == "__main__":
    main(*sys.argv[1:])
