#!/usr/bin/env python3
"""cni_runtime.py: calls CNI plugins the way a container runtime does (libcni's conflist
handling, CNI spec 1.1 "Execution of Network Configurations"), for e2e/netns/cni_plugin.sh.

  cni_runtime.py ADD|DEL|CHECK CONFLIST CONTAINER_ID NETNS_PATH IFNAME CACHE_DIR [CNI_ARGS]
  cni_runtime.py GC CONFLIST CACHE_DIR [CONTAINER_ID:IFNAME ...]   (the valid attachments)
  cni_runtime.py STATUS CONFLIST

ADD runs the plugins in order, each one's result becoming the next one's prevResult, and keeps the
last result in CACHE_DIR (as libcni does under /var/lib/cni/results); DEL runs them in reverse with
that cached result as prevResult, then forgets it; CHECK runs them in order with it. The first
failing plugin's stdout (the CNI error) is printed and its exit code returned; otherwise the final
result (ADD) or nothing. Plugins are looked up in CNI_PATH (from the environment). Each plugin's
stderr passes through.
"""
import json
import os
import subprocess
import sys


def plugin_config(conflist, plugin, prev_result):
    config = dict(plugin)
    config["cniVersion"] = conflist["cniVersion"]
    config["name"] = conflist["name"]
    if prev_result is not None:
        config["prevResult"] = prev_result
    return config


def run_plugin(plugin_type, command, config, env_extra):
    path = None
    for folder in os.environ.get("CNI_PATH", "").split(":"):
        candidate = os.path.join(folder, plugin_type)
        if folder and os.access(candidate, os.X_OK):
            path = candidate
            break
    if path is None:
        sys.stderr.write(f"cni_runtime: plugin {plugin_type} not found in CNI_PATH\n")
        return 1, ""
    env = dict(os.environ)
    env.update(env_extra)
    env["CNI_COMMAND"] = command
    proc = subprocess.run([path], input=json.dumps(config).encode(), env=env,
                          stdout=subprocess.PIPE, timeout=60)
    return proc.returncode, proc.stdout.decode()


def cache_file(cache_dir, conflist, container_id, ifname):
    return os.path.join(cache_dir, f"{conflist['name']}-{container_id}-{ifname}.json")


def main(argv):
    command = argv[1]
    with open(argv[2]) as f:
        conflist = json.load(f)
    plugins = conflist["plugins"]
    if command == "STATUS":
        for plugin in plugins:
            rc, out = run_plugin(plugin["type"], "STATUS", plugin_config(conflist, plugin, None), {})
            if rc != 0:
                sys.stdout.write(out)
                return rc
        return 0
    if command == "GC":
        valid = [{"containerID": a.split(":")[0], "ifname": a.split(":")[1]} for a in argv[4:]]
        for plugin in plugins:
            config = plugin_config(conflist, plugin, None)
            config["cni.dev/valid-attachments"] = valid
            rc, out = run_plugin(plugin["type"], "GC", config, {})
            if rc != 0:
                sys.stdout.write(out)
                return rc
        return 0

    container_id, netns, ifname, cache_dir = argv[3], argv[4], argv[5], argv[6]
    env = {"CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
           # As containerd and CRI-O do: plugins that do not know the pod's keys ignore them.
           "CNI_ARGS": ";".join(["IgnoreUnknown=1"] + argv[7:8])}
    cached = cache_file(cache_dir, conflist, container_id, ifname)
    if command == "ADD":
        result = None
        for plugin in plugins:
            rc, out = run_plugin(plugin["type"], "ADD", plugin_config(conflist, plugin, result), env)
            if rc != 0:
                sys.stdout.write(out)
                return rc
            result = json.loads(out)
        with open(cached, "w") as f:
            json.dump(result, f)
        sys.stdout.write(json.dumps(result) + "\n")
        return 0
    prev = None
    if os.path.exists(cached):
        with open(cached) as f:
            prev = json.load(f)
    order = list(reversed(plugins)) if command == "DEL" else plugins
    for plugin in order:
        rc, out = run_plugin(plugin["type"], command, plugin_config(conflist, plugin, prev), env)
        if rc != 0:
            sys.stdout.write(out)
            return rc
    if command == "DEL" and os.path.exists(cached):
        os.unlink(cached)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
