"""Image build: playbooks/image.yml under bench-image names (build container, repository, result file), so the
images, tags and result file of `bin/toolkit image-test` stay as they are. Two builds of the default variant: "full"
keeps the venv as the app role installed it (image_remove_other_server, image_prune_bytecode,
image_remove_unused_translations and image_remove_test_suites off; only the translation sources go, as in every
build), "trimmed" is the roles' default. For each: build time, size, the biggest directories, and the start time to
healthy (from `docker run` until the image's own HEALTHCHECK command succeeds, in alternating rounds, medians)."""

import json
import secrets
import statistics
import time

from .common import LOGS, ROOT, log, sh
from .playbook import playbook

CONTAINER = "bench-image"
STARTED = "bench-image-start"
REPOSITORY = "devops-channels/bench-image"
BUILDS = {
    "full": {
        "image_remove_other_server": False,
        "image_prune_bytecode": False,
        "image_remove_unused_translations": False,
        "image_remove_test_suites": False,
    },
    "trimmed": {},
}
START_ROUNDS = 3
START_TIMEOUT = 120


def figures(seconds, result):
    """The row of the report from the build's result file (keys ref and size, in bytes)."""
    size = str(result.get("size", ""))
    return {
        "measured": True,
        "build_s": seconds,
        "image": result.get("ref"),
        "size_mb": round(int(size) / 1e6) if size.isdigit() else None,
        "space": result.get("space", [])[:12],
    }


def build(name, extra):
    result_file = LOGS / f"image-result-{name}.json"
    names = {"image_build_container": CONTAINER, "image_repository": REPOSITORY, "image_result_file": str(result_file)}
    result_file.unlink(missing_ok=True)
    seconds, returncode, recap, _ = playbook(
        ROOT / "playbooks" / "image.yml", log_name=f"image-{name}", extra={**names, **extra}
    )
    if returncode != 0 or not result_file.exists():
        failed = f" in {recap.failures()[-1]}" if recap and recap.failures() else ""
        logs = f".cache/bench/image-{name}.json and .stderr"
        return {"measured": False, "reason": f"playbooks/image.yml failed (exit {returncode}{failed}, see {logs})"}
    row = figures(seconds, json.loads(result_file.read_text()))
    # The variant's tag moves to the next build: keep this one under a tag of its own.
    sh("docker", "tag", row["image"], f"{REPOSITORY}:{name}")
    row["image"] = f"{REPOSITORY}:{name}"
    log(f"image {name}: {seconds:.0f} s, {row['size_mb']} MB")
    return row


def start_to_healthy(image):
    """Seconds from `docker run` until the image's HEALTHCHECK command succeeds (the memory layer: no Redis needed)."""
    check = json.loads(sh("docker", "image", "inspect", "-f", "{{ json .Config.Healthcheck.Test }}", image).stdout)
    command = check[1:] if check[0] == "CMD" else ["sh", "-c", check[1]]
    env = {"DJANGO_SECRET_KEY": secrets.token_urlsafe(48), "DEPLOY_PUSH_TOKEN": secrets.token_urlsafe(32)}
    sh("docker", "rm", "-f", STARTED, check=False)
    started = time.monotonic()
    sh(
        "docker",
        "run",
        "-d",
        "--name",
        STARTED,
        "-e",
        "CHANNEL_LAYER=memory",
        *[a for k, v in env.items() for a in ("-e", f"{k}={v}")],
        image,
    )
    try:
        while time.monotonic() - started < START_TIMEOUT:
            if sh("docker", "exec", STARTED, *command, check=False).returncode == 0:
                return round(time.monotonic() - started, 2)
            time.sleep(0.1)
        return None
    finally:
        sh("docker", "rm", "-f", STARTED, check=False)


def run(args):
    if not (ROOT / "playbooks" / "image.yml").exists():
        return {"measured": False, "reason": "playbooks/image.yml does not exist"}
    log(f"image: playbooks/image.yml, builds {list(BUILDS)} (build container {CONTAINER}, repository {REPOSITORY})")
    try:
        rows = {name: build(name, extra) for name, extra in BUILDS.items()}
        measured = [name for name, row in rows.items() if row["measured"]]
        for name in measured:
            rows[name]["start_s"] = []
        for _ in range(START_ROUNDS):
            for name in measured:
                rows[name]["start_s"].append(start_to_healthy(rows[name]["image"]))
        for name in measured:
            times = [t for t in rows[name]["start_s"] if t is not None]
            rows[name]["start_median_s"] = statistics.median(times) if times else None
            log(f"image {name}: start to healthy {rows[name]['start_s']} s")
        return {
            "measured": bool(measured),
            "builds": rows,
            "reason": "; ".join(f"{name}: {row['reason']}" for name, row in rows.items() if not row["measured"]),
        }
    finally:
        sh("docker", "rm", "-f", CONTAINER, STARTED, check=False)
        for tag in sh("docker", "images", REPOSITORY, "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
            sh("docker", "rmi", tag, check=False)
