"""Reads a systemd unit of packaging/ the way systemd would start it, for systemd_units.sh.

Usage: systemd_units.py get UNIT_FILE KEY    prints the [Service] setting KEY ("" if unset)
       systemd_units.py exec UNIT_FILE [--env-file ORIG=PATH ...] [--map ORIG=PATH ...]
  exec prints ExecStart's command line, each word followed by a NUL: the environment files the
  unit names are read (an
  --env-file maps a path the unit names to the file to read instead; a file with a leading '-'
  may be missing), variables are expanded as systemd does ($VAR alone in a word: split at
  whitespace into words; ${VAR}: replaced in place), and every word equal to, or starting with
  ORIG/, a --map ORIG gets PATH in its place. Exits 1 naming the problem when ExecStart uses a
  variable no environment file defines.
"""
import re
import shlex
import sys


def read_unit(path):
    sections, section = {}, None
    lines = open(path).read().replace("\\\n", " ").splitlines()
    for line in lines:
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        section.append((key.strip(), value.strip()))
    return sections


def read_env_file(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            sys.exit(f"{path}: line without '=': {line}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def main():
    args = sys.argv[1:]
    mode, unit = args.pop(0), args.pop(0)
    service_lines = read_unit(unit).get("Service", [])
    if mode == "get":
        print(dict(service_lines).get(args[0], ""))
        return
    env_files, maps = {}, []
    while args:
        flag, spec = args.pop(0), args.pop(0)
        orig, _, path = spec.partition("=")
        if flag == "--env-file":
            env_files[orig] = path
        else:
            maps.append((orig, path))
    service = dict(service_lines)
    env = {}
    for key, value in service_lines:
        if key != "EnvironmentFile":
            continue
        optional = value.startswith("-")
        name = value.lstrip("-")
        path = env_files.get(name, name)
        try:
            env.update(read_env_file(path))
        except FileNotFoundError:
            if not optional:
                sys.exit(f"{unit}: EnvironmentFile {name} ({path}) does not exist")
    words = []
    for word in shlex.split(service["ExecStart"]):
        alone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if alone:
            if alone.group(1) not in env:
                sys.exit(f"{unit}: ExecStart uses ${alone.group(1)}, which no EnvironmentFile sets")
            words.extend(env[alone.group(1)].split())
            continue

        def expand(m):
            if m.group(1) not in env:
                sys.exit(f"{unit}: ExecStart uses ${{{m.group(1)}}}, which no EnvironmentFile sets")
            return env[m.group(1)]

        words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", expand, word))
    for i, word in enumerate(words):
        for orig, path in maps:
            if word == orig or word.startswith(orig + "/"):
                words[i] = path + word[len(orig):]
                break
    sys.stdout.buffer.write(b"\0".join(w.encode() for w in words) + b"\0")


if __name__ == "__main__":
    main()
