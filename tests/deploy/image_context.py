#!/usr/bin/env python3
"""Lays out the build stage's source tree of containers/api-proxy/Dockerfile, without Docker.

Reads the first stage's WORKDIR and COPY instructions (those without --from), takes each
source from the repository root filtered by .dockerignore (Docker's rules: patterns matched
against the path and its parents, `**` for any depth, `!` re-includes, the last match wins),
and mirrors the result into OUT (files copied with their mtimes, stale files removed, OUT/target
left alone), so that scripts/check-image.sh can run the Dockerfile's own `cargo build` in it
and incremental builds stay incremental. A file the Dockerfile needs but does not COPY (say a
target newly declared in Cargo.toml) then fails here as it would in `docker build`.

Usage: image_context.py REPO_ROOT DOCKERFILE OUT
"""

import os
import posixpath
import re
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dockerfile_policy import instructions, strip_flags  # noqa: E402


def pattern_regex(pattern):
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif c == "*":
            out, i = out + "[^/]*", i + 1
        elif c == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(c), i + 1
    return re.compile(out + r"\Z")


def ignore_rules(text):
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, pattern_regex(line)))
    return rules


def excluded(rel, rules):
    parts = rel.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, rx in rules:
        if any(rx.match(c) for c in candidates):
            result = not negated
    return result


def files_under(root, rel):
    path = os.path.join(root, rel)
    if os.path.isfile(path):
        yield rel
        return
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            yield os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")


def plan(root, dockerfile_text, rules):
    """{destination relative to the build stage's WORKDIR: source relative to root}."""
    workdir = "/"
    wanted = {}
    froms = 0
    for no, word, args in instructions(dockerfile_text):
        if word == "FROM":
            froms += 1
            if froms > 1:
                break
            continue
        if word == "WORKDIR":
            workdir = posixpath.join(workdir, args)
        if word not in ("COPY", "ADD"):
            continue
        flags, rest = strip_flags(args)
        if any(f.startswith("--from") for f in flags):
            continue
        *sources, dest = rest.split()
        dest_abs = posixpath.normpath(posixpath.join(workdir, dest))
        for src in sources:
            src = posixpath.normpath(src)
            files = [f for f in files_under(root, src) if not excluded(f, rules)]
            if not files:
                raise SystemExit(f"line {no}: COPY {src}: nothing left after .dockerignore (docker build would fail)")
            is_dir = os.path.isdir(os.path.join(root, src))
            for f in files:
                if is_dir:
                    target = posixpath.join(dest_abs, posixpath.relpath(f, src))
                elif dest.endswith("/") or len(sources) > 1:
                    target = posixpath.join(dest_abs, posixpath.basename(f))
                else:
                    target = dest_abs
                wanted[target] = f
    final_workdir = workdir
    return {posixpath.relpath(t, final_workdir): s for t, s in wanted.items()}


def mirror(root, wanted, out):
    os.makedirs(out, exist_ok=True)
    for dest, src in wanted.items():
        s, d = os.path.join(root, src), os.path.join(out, dest)
        if dest.startswith("../"):
            raise SystemExit(f"COPY {src} lands outside the WORKDIR; not supported here")
        os.makedirs(os.path.dirname(d), exist_ok=True)
        st = os.stat(s)
        if os.path.exists(d):
            dt = os.stat(d)
            if dt.st_size == st.st_size and int(dt.st_mtime) == int(st.st_mtime):
                continue
        shutil.copy2(s, d)
    keep = set(wanted)
    for dirpath, dirnames, filenames in os.walk(out, topdown=True):
        rel_dir = os.path.relpath(dirpath, out).replace(os.sep, "/")
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != "target"]
            rel_dir = ""
        for name in filenames:
            rel = posixpath.join(rel_dir, name) if rel_dir else name
            if rel not in keep:
                os.remove(os.path.join(dirpath, name))


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    root, dockerfile, out = argv[1:]
    with open(dockerfile, encoding="utf-8") as f:
        text = f.read()
    ignore_path = os.path.join(root, ".dockerignore")
    rules = []
    if os.path.exists(ignore_path):
        with open(ignore_path, encoding="utf-8") as f:
            rules = ignore_rules(f.read())
    wanted = plan(root, text, rules)
    mirror(root, wanted, out)
    print(f"image context: {len(wanted)} files from {len(set(w.split('/')[0] for w in wanted.values()))} top-level entries -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
