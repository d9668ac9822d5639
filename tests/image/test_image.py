"""The container image (deploy/Dockerfile), built and run with Podman. Opt-in: skipped unless
WARDGATE_TEST_IMAGE=1.

The build is a release build of the whole binary, llama.cpp included, inside the container (on
the 2-core development VM, beside other builds, 45 minutes), far too slow for every run of
`scripts/test`. Podman's `vfs` storage copies every layer whole: allow about 25 GB of disk. It
needs `podman` (Debian: `apt-get install podman runc`) and root.

Base images: the Dockerfile's `RUST_IMAGE` and `DEBIAN_IMAGE` are pulled when a container
registry answers. Where none does (the development VM and CI reach package registries only), the
test makes stand-ins from Debian's packages and names them with those build arguments: a Debian
trixie root made by `debootstrap` (`apt-get install debootstrap`), and on top of it the Rust
toolchain this machine runs (`rustc --print sysroot`, which must be RUST_VERSION's release) with
the compilers the official Rust image carries, and trusting the CA certificates this machine
adds (/usr/local/share/ca-certificates: where a TLS-intercepting proxy stands between the build
and crates.io, its CA). Both are kept in Podman's store and reused.

Podman on such a VM (cgroup v1 with a hybrid v2 mount, no CAP_SYS_RESOURCE) needs `runc` (crun
refuses the hybrid cgroup mount), the cgroupfs manager and resource limits under the VM's own;
unless CONTAINERS_CONF names a configuration, the test writes one that says so.

The checks: `wardgate --version`; the image's user is uid 10001 and it declares a HEALTHCHECK;
then `wardgate serve` on a read-only root filesystem (a tmpfs on /tmp, a volume on
/var/lib/wardgate) becomes healthy by the image's own HEALTHCHECK, runs as uid 10001, and has
written its SQLite file into the volume and nowhere else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "deploy/Dockerfile"

pytestmark = pytest.mark.skipif(
    os.environ.get("WARDGATE_TEST_IMAGE") != "1",
    reason="the image build is opt-in: WARDGATE_TEST_IMAGE=1 (a release build, ~45 min)",
)

IMAGE = "localhost/wardgate-test/wardgate:test"
# The stand-ins' tags; a change to how they are made needs a new tag (or `podman rmi`), since
# an existing one is reused.
STANDIN_DEBIAN = "localhost/wardgate-test/debian:{release}-slim-2"
STANDIN_RUST = "localhost/wardgate-test/rust:{rust}-{release}-2"
BUILD_TIMEOUT_S = 90 * 60
PULL_TIMEOUT_S = 300
HEALTHY_TIMEOUT_S = 120
UID = "10001"
LOCAL_CA_DIR = "/usr/local/share/ca-certificates"

# For Podman as root on a VM like the development one; see the module's doc.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
{runtime}
"""

# What the official Rust image (buildpack-deps) carries that the build needs: C and C++
# compilers, make (the cmake crate's generator), pkg-config, CA certificates.
STANDIN_RUST_CONTAINERFILE = """\
FROM {debian}
RUN apt-get update \\
    && apt-get install -y --no-install-recommends \\
        ca-certificates gcc g++ libc6-dev make pkg-config \\
    && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
COPY toolchain /usr/local/rust
ENV CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin
RUN mkdir -p /usr/local/cargo/bin && rustc --version && cargo --version
"""


def dockerfile_arg(name: str) -> str:
    """A global ARG's default in deploy/Dockerfile."""
    m = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(encoding="utf-8"), flags=re.M)
    assert m, f"deploy/Dockerfile has no `ARG {name}=...`"
    return m.group(1)


def workspace_version() -> str:
    m = re.search(
        r'^\[workspace\.package\]\n(?:.*\n)*?version = "([^"]+)"',
        (REPO_ROOT / "Cargo.toml").read_text(encoding="utf-8"),
        flags=re.M,
    )
    assert m, "Cargo.toml has no [workspace.package] version"
    return m.group(1)


class Podman:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(
        self, *args: str, timeout: float = 120, check: bool = True, **kw
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kw,
        )
        if check and p.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {p.returncode}:\n"
                f"{p.stdout[-4000:]}{p.stderr[-4000:]}"
            )
        return p

    def exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def pull(self, image: str) -> bool:
        """True when `image` is here or could be pulled."""
        if self.exists(image):
            return True
        try:
            pulled = self.run("pull", "-q", image, timeout=PULL_TIMEOUT_S, check=False)
            return pulled.returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def build(self, context: Path, *args: str) -> None:
        """`podman build`, its output in the log (it is long): the tail goes into a failure."""
        log = Path(tempfile.mkstemp(prefix="wardgate-image-build-", suffix=".log")[1])
        with log.open("w") as out:
            p = subprocess.run(
                # Docker's format: OCI's drops HEALTHCHECK. The host network: the build
                # fetches Debian packages and crates.
                ["podman", "build", "--format", "docker", "--network", "host", *args, "."],
                cwd=context,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        tail = log.read_text(errors="replace")[-6000:]
        assert p.returncode == 0, f"podman build exited {p.returncode} (log {log}):\n{tail}"
        log.unlink()


def host_debian_mirror() -> list[str]:
    """The Debian mirror this machine's apt uses (its first `URIs:` or `deb` line naming a
    `/debian` archive), as debootstrap's mirror argument; none found: no argument, and
    debootstrap takes its own default."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    sources.append(Path("/etc/apt/sources.list"))
    for path in sources:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] or words[:1] == ["deb"]:
                for url in words[1:]:
                    if url.startswith("http") and url.rstrip("/").endswith("/debian"):
                        return [url]
    return []


def standin_debian(podman: Podman, release: str) -> str:
    tag = STANDIN_DEBIAN.format(release=release)
    if podman.exists(tag):
        return tag
    debootstrap = shutil.which("debootstrap")
    assert debootstrap, "no container registry answers and debootstrap is not installed"
    with tempfile.TemporaryDirectory(prefix="wardgate-rootfs-") as root:
        subprocess.run(
            [debootstrap, "--variant=minbase", release, root, *host_debian_mirror()],
            capture_output=True,
            check=True,
            timeout=1800,
        )
        # The temporary directory is made 0700, and it becomes the image's `/`: a non-root
        # user could then reach nothing (runc: "stat /bin/sh: permission denied").
        os.chmod(root, 0o755)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        podman.run("import", "-", tag, stdin=tar.stdout, timeout=600)
        assert tar.wait() == 0
    return tag


def standin_rust(podman: Podman, debian: str, rust: str, release: str) -> str:
    tag = STANDIN_RUST.format(rust=rust, release=release)
    if podman.exists(tag):
        return tag
    version = subprocess.run(
        ["rustc", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith(f"rustc {rust}."), (
        f"the stand-in Rust image takes this machine's toolchain, {version.strip()}, "
        f"but deploy/Dockerfile's RUST_VERSION is {rust}"
    )
    sysroot = Path(
        subprocess.run(
            ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    host = re.search(
        r"^host: (\S+)$",
        subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout,
        flags=re.M,
    )
    assert host
    with tempfile.TemporaryDirectory(prefix="wardgate-rust-") as ctx:
        tc = Path(ctx) / "toolchain"
        (tc / "bin").mkdir(parents=True)
        for b in ("rustc", "cargo", "rustdoc"):
            shutil.copy2(sysroot / "bin" / b, tc / "bin" / b)
        # The compiler's libraries and the host's standard library (its linker, rust-lld,
        # included); not the sources nor other targets.
        (tc / "lib/rustlib").mkdir(parents=True)
        for lib in (sysroot / "lib").glob("*.so*"):
            shutil.copy2(lib, tc / "lib" / lib.name)
        shutil.copytree(
            sysroot / "lib/rustlib" / host.group(1), tc / "lib/rustlib" / host.group(1)
        )
        # This machine's own CA certificates (a TLS-intercepting proxy's, on the development
        # VM), so that the build fetches crates the way this machine does.
        (Path(ctx) / "ca").mkdir()
        for crt in Path(LOCAL_CA_DIR).glob("*.crt"):
            shutil.copy2(crt, Path(ctx) / "ca" / crt.name)
        (Path(ctx) / "Containerfile").write_text(
            STANDIN_RUST_CONTAINERFILE.format(debian=debian), encoding="utf-8"
        )
        podman.build(Path(ctx), "-t", tag)
    return tag


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    assert shutil.which("podman"), "WARDGATE_TEST_IMAGE=1 needs podman (apt-get install podman)"
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="wardgate-podman-") as d:
        if "CONTAINERS_CONF" not in env:
            conf = Path(d) / "containers.conf"
            runtime = 'runtime = "runc"' if shutil.which("runc") else ""
            conf.write_text(CONTAINERS_CONF.format(runtime=runtime), encoding="utf-8")
            env["CONTAINERS_CONF"] = str(conf)
        yield Podman(env)


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    rust, release = dockerfile_arg("RUST_VERSION"), dockerfile_arg("DEBIAN_RELEASE")
    official_rust = f"docker.io/library/rust:{rust}-{release}"
    official_debian = f"docker.io/library/debian:{release}-slim"
    args = ["-f", str(DOCKERFILE)]
    if not (podman.pull(official_rust) and podman.pull(official_debian)):
        debian = standin_debian(podman, release)
        args += [
            "--build-arg",
            f"RUST_IMAGE={standin_rust(podman, debian, rust, release)}",
            "--build-arg",
            f"DEBIAN_IMAGE={debian}",
        ]
    # The Dockerfile picks its stages by name (`FROM toolchain-${ACCELERATOR}`), which Debian
    # 12's Podman (buildah 1.28) resolves as an image name, not as a stage: it gets those stages
    # built first and tagged under those names, to be found in local storage.
    for stage in ("toolchain-cpu", "runtime-cpu"):
        podman.build(REPO_ROOT, *args, "--target", stage, "-t", f"localhost/{stage}")
    podman.build(REPO_ROOT, *args, "-t", IMAGE)
    return IMAGE


def test_the_binary_reports_the_workspace_version(podman: Podman, image: str) -> None:
    out = podman.run("run", "--rm", "--network", "none", image, "wardgate", "--version").stdout
    assert out.strip() == f"wardgate {workspace_version()}"


def test_the_image_runs_as_uid_10001_with_a_healthcheck(podman: Podman, image: str) -> None:
    inspect = podman.run(
        "image", "inspect", image, "--format", "{{.Config.User}}|{{json .Config.Healthcheck}}"
    ).stdout.strip()
    user, health = inspect.split("|", 1)
    assert user == f"{UID}:{UID}"
    assert "HEALTHCHECK_URL" in health, health


def test_serve_is_healthy_on_a_read_only_root(podman: Podman, image: str) -> None:
    volume = f"wardgate-test-{os.getpid()}"
    name = f"wardgate-test-{os.getpid()}"
    podman.run("volume", "create", volume)
    try:
        podman.run(
            "run",
            "-d",
            "--name",
            name,
            "--read-only",
            "--tmpfs",
            "/tmp",
            "-v",
            f"{volume}:/var/lib/wardgate",
            "--network",
            "none",
            "-e",
            "WARDGATE_LISTEN=0.0.0.0:8080",
            # A backend nothing answers: liveness does not depend on it, and no model is fetched.
            "-e",
            "WARDGATE_BACKEND=ollama:http://127.0.0.1:9",
            image,
        )
        deadline = time.monotonic() + HEALTHY_TIMEOUT_S
        while True:
            check = podman.run("healthcheck", "run", name, check=False)
            if check.returncode == 0:
                break
            state = podman.run("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
            if state != "running" or time.monotonic() > deadline:
                logs = podman.run("logs", name, check=False)
                raise AssertionError(
                    f"not healthy ({state}; healthcheck: {check.stdout}{check.stderr}):\n"
                    f"{logs.stdout[-4000:]}{logs.stderr[-4000:]}"
                )
            time.sleep(1)
        assert podman.run("exec", name, "id", "-u").stdout.strip() == UID
        # The state went into the volume; the root filesystem took nothing.
        listing = podman.run("exec", name, "ls", "/var/lib/wardgate/data").stdout.split()
        assert "wardgate.db" in listing, listing
        refused = podman.run("exec", name, "touch", "/usr/local/bin/x", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    finally:
        podman.run("rm", "-f", "-t", "0", name, check=False)
        podman.run("volume", "rm", "-f", volume, check=False)
