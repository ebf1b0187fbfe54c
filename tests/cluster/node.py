"""The local cluster's real node: kubelet + containerd + runc on a CNI bridge, kube-proxy and CoreDNS.

Beside kwok's fake nodes (scheduling and scale tests) one node runs real pods from the images that
``scripts/images.sh`` builds from our Dockerfiles. Everything stays on this machine:

- a bridge ``msbr0`` holds the pod network (``POD_CIDR``, the bridge is its gateway ``GATEWAY``) and routes
  for the Service range and for kwok's fake pod addresses, so no cluster address leaves through another
  interface; a FORWARD rule drops whatever a pod sends to any address outside the cluster's ranges;
- the API server listens on the gateway address, where pods reach it (``kubernetes`` Service ->
  kube-proxy -> ``GATEWAY``) and the host does too; CoreDNS (no upstream: cluster names only) and the
  kubelet listen there as well;
- the node is tainted ``modelservice.io/real-node``: only pods that tolerate the taint (tests that ask for a
  real pod) run on it; everything else keeps landing on kwok's nodes;
- it advertises two ``nvidia.com/gpu`` (product ``FAKE-GPU-RUNS-ON-CPU``) so GPU ModelServices run for real:
  there is no GPU, TensorFlow falls back to the CPU.

kubelet changes host state; ``teardown`` undoes all of it: pods and their network namespaces, mounts under
our directories, the bridge and routes, every iptables chain kubelet, kube-proxy or we created (and the
rules that jump to them), the sysctls recorded before start, directories that did not exist before, and
the kubelet's cgroups. Needs root (as CI has); ``MODELSERVICE_REAL_NODE=0`` leaves the node out.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

NODE_NAME = "real-node"
BRIDGE = "msbr0"
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"
SERVICE_CIDR = "10.96.0.0/16"
# kwok gives its fake pods addresses from here (its --cidr): routed to the bridge, where nothing answers.
KWOK_POD_CIDR = "10.244.128.0/17"
CLUSTER_CIDR = "10.244.0.0/16"
TAINT = "modelservice.io/real-node"
# An extended resource the node advertises (status.capacity) so GPU ModelServices run here for real; there
# is no GPU behind it: TensorFlow falls back to the CPU. The product label says so.
GPUS = 2
GPU_PRODUCT = "FAKE-GPU-RUNS-ON-CPU"
RUN = Path("/run/modelservice")
# Sysctls kubelet, kube-proxy or the bridge network change; recorded at start, restored on teardown.
SYSCTLS = (
    "kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet", "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established", "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)  # fmt: skip
# Host directories kubelet and the CNI plugins create whatever their configuration says.
HOST_DIRS = ("/var/lib/cni", "/var/log/containers", "/var/log/pods", "/var/run/netns", "/var/lib/kubelet",
             "/etc/cni", "/opt/cni", "/run/containerd")  # fmt: skip
# iptables chains created by kubelet, kube-proxy and us; teardown removes them and every rule naming them.
OUR_CHAINS = re.compile(r"\b(KUBE-[A-Z0-9-]+|MODELSERVICE-[A-Z0-9-]+)\b")
CNI_BIN = Path("/usr/lib/cni")
DEBIAN_PACKAGES_SCRIPT = "scripts/install-node-deps.sh"


def enabled() -> bool:
    return os.environ.get("MODELSERVICE_REAL_NODE", "1") != "0"


def _run(*args: str, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), check=check, text=True, capture_output=True, input=input_text, timeout=120
    )


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


# --------------------------------------------------------------------------------------- host state


def record_host_state(state: Path) -> None:
    """What teardown restores: sysctls and which host directories existed. Kept once per start."""
    record = state / "host-before.json"
    if record.exists():
        return
    sysctls = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            sysctls[name] = _sysctl_path(name).read_text().strip()
    modules = Path("/proc/modules").read_text() if Path("/proc/modules").exists() else ""
    record.write_text(json.dumps({
        "sysctls": sysctls,
        "existing_dirs": [d for d in HOST_DIRS if Path(d).exists()],
        "br_netfilter_loaded": "br_netfilter " in modules,
    }))  # fmt: skip


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        _sysctl_path(name).write_text(value)


def setup_network(state: Path) -> None:
    """The bridge, its routes, bridge netfilter, forwarding, and the rule keeping pods' traffic local."""
    record_host_state(state)
    if not Path("/proc/sys/net/bridge").exists() and shutil.which("modprobe"):
        _run("modprobe", "br_netfilter", check=False)
    if _run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "replace", f"{GATEWAY}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    # The Service range and kwok's fake pod addresses end on the bridge, never on another interface.
    _run("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", GATEWAY)
    _run("ip", "route", "replace", KWOK_POD_CIDR, "dev", BRIDGE, "src", GATEWAY)
    _write_sysctl("net/ipv4/ip_forward", "1")
    _write_sysctl("net/bridge/bridge-nf-call-iptables", "1")
    _write_sysctl("net/bridge/bridge-nf-call-ip6tables", "1")
    if _run("iptables", "-w", "-n", "-L", "MODELSERVICE-FORWARD", check=False).returncode != 0:
        _run("iptables", "-w", "-N", "MODELSERVICE-FORWARD")
        _run(
            "iptables",
            "-w",
            "-A",
            "MODELSERVICE-FORWARD",
            "-s",
            CLUSTER_CIDR,
            "-d",
            CLUSTER_CIDR,
            "-j",
            "RETURN",
        )
        _run("iptables", "-w", "-A", "MODELSERVICE-FORWARD", "-s", CLUSTER_CIDR, "-j", "DROP")
        _run("iptables", "-w", "-I", "FORWARD", "1", "-j", "MODELSERVICE-FORWARD")


def _strip_our_chains(dump: str) -> str:
    kept = []
    for line in dump.splitlines():
        if line.startswith((":", "-A", "-I")) and OUR_CHAINS.search(line):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def _restore_iptables() -> None:
    for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
        if shutil.which(save) is None:
            continue
        dump = _run(save, check=False).stdout
        if not OUR_CHAINS.search(dump):
            continue
        _run(restore, "-w", input_text=_strip_our_chains(dump), check=False)


def _mount_prefixes(state: Path) -> tuple[str, ...]:
    """Where the node mounts: its run and state directories, and the CRI's pod network namespaces."""
    return (str(RUN) + "/", str(state / "node") + "/", "/var/run/netns/cni-", "/run/netns/cni-")


def _unmount_under(prefixes: tuple[str, ...]) -> None:
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefixes):
            mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        if _run("umount", target, check=False).returncode != 0:
            _run("umount", "-l", target, check=False)


def _kill_pod_processes() -> None:
    """Whatever still runs in the kubelet's pod cgroups (a container whose shim died first) is killed."""
    for procs in Path("/sys/fs/cgroup/pids/kubepods").rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            with contextlib.suppress(OSError):
                os.kill(int(pid), signal.SIGKILL)


def _remove_cgroups() -> None:
    root = Path("/sys/fs/cgroup")
    if not root.exists():
        return
    _kill_pod_processes()
    time.sleep(0.2)
    for controller in root.iterdir():
        for top in ("kubepods", "kubepods.slice"):
            base = controller / top
            if not base.is_dir():
                continue
            for directory in sorted(
                (p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            ):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                base.rmdir()


def _kill_shims(address: Path) -> None:
    """containerd's shims outlive containerd by design; ours are those started with our socket."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and str(address).encode() in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


def remove_pods(kubectl: Callable[..., subprocess.CompletedProcess[str]], api_up: bool) -> None:
    """Every pod off the node while kubelet and containerd still run, so kubelet tears each one down
    through the CRI (CNI teardown included): cordon, delete, wait for containerd to run no task. Without
    an API server, containerd's tasks are killed directly (teardown then removes what they leave)."""
    socket = RUN / "containerd.sock"
    if not socket.exists():
        return
    ctr = ("ctr", f"--address={socket}", "-n", "k8s.io")

    def tasks() -> list[str]:
        return _run(*ctr, "tasks", "ls", "-q", check=False).stdout.split()

    if api_up and kubectl("get", "node", NODE_NAME, check=False).returncode == 0:
        kubectl("cordon", NODE_NAME, check=False)
        kubectl("delete", "pods", "--all-namespaces", f"--field-selector=spec.nodeName={NODE_NAME}",
                "--grace-period=0", "--force", "--wait=false", check=False)  # fmt: skip
        deadline = time.monotonic() + 60
        while tasks() and time.monotonic() < deadline:
            time.sleep(0.5)
    for task in tasks():
        _run(*ctr, "tasks", "kill", "--signal=SIGKILL", task, check=False)
    time.sleep(0.5 if tasks() else 0)
    for task in tasks():
        _run(*ctr, "tasks", "delete", "--force", task, check=False)
    containers = _run(*ctr, "containers", "ls", "-q", check=False).stdout.split()
    if containers:
        _run(*ctr, "containers", "delete", *containers, check=False)


def teardown(state: Path) -> None:
    """Undo what the node changed on the host (processes are already stopped by the harness)."""
    _kill_shims(RUN / "containerd.sock")
    _kill_pod_processes()
    _unmount_under(_mount_prefixes(state))
    for netns in Path("/run/netns").glob("cni-*") if Path("/run/netns").exists() else ():
        netns.unlink(missing_ok=True)
    for link in _run("ip", "-o", "link", "show", "type", "veth", check=False).stdout.splitlines():
        # veth ends whose pod namespace is gone already went with it; any still on our bridge go now
        if f"master {BRIDGE}" in link:
            _run("ip", "link", "delete", link.split(":")[1].strip().split("@")[0], check=False)
    if _run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
        _run("ip", "link", "delete", BRIDGE, check=False)  # its routes and addresses go with it
    _restore_iptables()
    _remove_cgroups()
    record = state / "host-before.json"
    if record.exists():
        before = json.loads(record.read_text())
        for name, value in before["sysctls"].items():
            _write_sysctl(name, value)
        for directory in HOST_DIRS:
            if directory not in before["existing_dirs"]:
                path = Path(directory)
                if path.is_symlink() or path.is_file():
                    path.unlink(missing_ok=True)
                elif path.exists():
                    shutil.rmtree(path, ignore_errors=True)
        if not before.get("br_netfilter_loaded", True) and shutil.which("modprobe"):
            _run("modprobe", "-r", "br_netfilter", check=False)
        record.rename(state / "host-restored.json")  # what `leftovers` compares the host with
    shutil.rmtree(RUN, ignore_errors=True)


def leftovers(state: Path, binaries: Path) -> list[str]:
    """What the node left on the host after teardown (empty when it undid everything): our processes,
    the bridge, routes, iptables chains, mounts, cgroups, directories, and sysctls not back as recorded."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = os.readlink(proc / "exe")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if exe.startswith(str(binaries)) or str(RUN) in cmdline or str(state / "node") in cmdline:
            found.append(f"process {proc.name}: {cmdline[:120]}")
    if Path("/sys/class/net", BRIDGE).exists():
        found.append(f"interface {BRIDGE}")
    routes = _run("ip", "route", "show", check=False).stdout
    found += [f"route {cidr}" for cidr in (SERVICE_CIDR, KWOK_POD_CIDR, POD_CIDR) if cidr in routes]
    for save in ("iptables-save", "ip6tables-save"):
        if shutil.which(save):
            chains = sorted(set(OUR_CHAINS.findall(_run(save, check=False).stdout)))
            found += [f"{save}: chain {c}" for c in chains]
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1]
        if target.startswith(_mount_prefixes(state)):
            found.append(f"mount {target}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("*/kubepods")]
    if RUN.exists():
        found.append(f"directory {RUN}")
    restored = state / "host-restored.json"
    if restored.exists():
        before = json.loads(restored.read_text())
        for name, value in before["sysctls"].items():
            with contextlib.suppress(OSError):
                now = _sysctl_path(name).read_text().strip()
                if now != value:
                    found.append(f"sysctl {name.replace('/', '.')} = {now} (was {value})")
        found += [
            f"directory {d}" for d in HOST_DIRS if d not in before["existing_dirs"] and Path(d).exists()
        ]
    return found


# -------------------------------------------------------------------------------------------- configs


def write_configs(state: Path, cache: Path, pki: Path, ports: dict[str, int], pause_image: str,
                  kubeconfig: Callable[[str, str], Path]) -> None:  # fmt: skip
    node = state / "node"
    for sub in ("cni", "kubelet", "pod-logs", "ipam"):
        (node / sub).mkdir(parents=True, exist_ok=True)
    RUN.mkdir(parents=True, exist_ok=True)
    (node / "cni" / "10-modelservice.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "modelservice",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(node / "ipam"), "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "loopback"},
        ],
    }, indent=1))  # fmt: skip
    # containerd's image store lives in the cache: images loaded once survive cluster-down.
    (node / "containerd.toml").write_text(f"""version = 2
root = "{cache / 'containerd'}"
state = "{RUN / 'containerd'}"
[grpc]
  address = "{RUN / 'containerd.sock'}"
[ttrpc]
  address = "{RUN / 'containerd.sock.ttrpc'}"
[metrics]
  address = "127.0.0.1:{ports['containerd']}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # This VM's root lacks CAP_SYS_RESOURCE: lowering oom_score_adj fails in runc without this.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{node / 'cni'}"
""")  # fmt: skip
    (node / "resolv.conf").write_text(f"nameserver {GATEWAY}\n")
    (node / "kubelet.yaml").write_text(json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": GATEWAY, "port": ports["kubelet"], "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": ports["kubelet-healthz"],
        "tlsCertFile": str(pki / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{RUN / 'containerd.sock'}",
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "oomScoreAdj": 0, "failSwapOn": False,
        "clusterDomain": "cluster.local", "clusterDNS": [GATEWAY], "resolvConf": str(node / "resolv.conf"),
        "podCIDR": POD_CIDR, "maxPods": 30, "podLogsDir": str(node / "pod-logs"),
        "serializeImagePulls": False, "registerNode": True,
        "registerWithTaints": [{"key": TAINT, "value": "true", "effect": "NoSchedule"}],
        # A shared development disk: never evict pods or delete our images for its fill level.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "syncFrequency": "10s", "nodeStatusReportFrequency": "20s",
    }, indent=1))  # fmt: skip
    (node / "kube-proxy.yaml").write_text(json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig("kube-proxy", "kube-proxy"))},
        "mode": "iptables", "clusterCIDR": CLUSTER_CIDR, "hostnameOverride": NODE_NAME, "bindAddress": GATEWAY,
        "healthzBindAddress": f"127.0.0.1:{ports['kube-proxy']}",
        "metricsBindAddress": f"127.0.0.1:{ports['kube-proxy-metrics']}",
        # 0: leave the host's conntrack table size and timeouts alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
        "nodePortAddresses": [f"{GATEWAY}/32"], "detectLocalMode": "ClusterCIDR",
    }, indent=1))  # fmt: skip
    (node / "Corefile").write_text(f""".:53 {{
    bind {GATEWAY}
    errors
    health 127.0.0.1:{ports['coredns']}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig('coredns', 'coredns')}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
""")  # fmt: skip


def rbac() -> str:
    """CoreDNS's read access (kube-proxy and the kubelet have theirs built in: node-proxier, Node authorizer)."""
    objects = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "modelservice:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "modelservice:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "modelservice:coredns"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}]},
    ]  # fmt: skip
    return "\n---\n".join(json.dumps(o) for o in objects)


def load_images(refs: list[str], images_cache: Path, log: Callable[[str], None]) -> None:
    """Copy images from buildah's store (scripts/images.sh) into containerd's ``k8s.io`` namespace once."""
    socket = RUN / "containerd.sock"
    present = set(_run("ctr", f"--address={socket}", "-n", "k8s.io", "images", "ls", "-q").stdout.split())
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(images_cache / "storage.conf")}
    for ref in refs:
        if ref in present:
            continue
        log(f"Loading {ref} into the node's containerd")
        archive = images_cache / "load.tar"
        archive.unlink(missing_ok=True)
        subprocess.run(["buildah", "push", "--quiet", ref, f"docker-archive:{archive}:{ref}"], env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=900)  # fmt: skip
        try:
            _run("ctr", f"--address={socket}", "-n", "k8s.io", "images", "import", str(archive))
        finally:
            archive.unlink(missing_ok=True)
