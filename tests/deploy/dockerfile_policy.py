#!/usr/bin/env python3
"""The image rules hadolint does not know about, checked on containers/api-proxy/Dockerfile.

hadolint (installed from PyPI by scripts/check-image.sh) lints Dockerfile style and common
mistakes. This adds what this image promises (docs/deploy.md, DESIGN section 8):

  - multi-stage: at least two FROM, the last one `scratch` or a distroless image;
  - every base image pinned: a tag that is not `latest`, or a digest (scratch excepted);
  - exec form (JSON array) for ENTRYPOINT, CMD and HEALTHCHECK CMD: the proxy is PID 1
    and nothing needs a shell (there is none in scratch);
  - the final stage sets a non-root USER (numeric, not 0), and it is the last USER;
  - EXPOSE covers 10000-10004 and 9901;
  - HEALTHCHECK runs `/llm-keyproxy health` (no curl, no wget anywhere in an instruction);
  - no secrets: no ENV/ARG whose name says KEY, TOKEN, SECRET or PASSWORD, and no value
    shaped like a key (sk-..., ghp_..., AIza..., Bearer ...);
  - the build stage runs the static musl release build of llm-keyproxy;
  - the repository's .dockerignore keeps target/, .git and .venv out of the context.

Usage: dockerfile_policy.py DOCKERFILE [DOCKERIGNORE]   -> exit 0, or 1 listing every problem
       dockerfile_policy.py --build-command DOCKERFILE  -> prints the `cargo build` arguments
       dockerfile_policy.py --self-test                 -> proves each rule catches a broken file
"""

import json
import re
import sys

PORTS = {10000, 10001, 10002, 10003, 10004, 9901}
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
SECRET_VALUE = re.compile(r"(sk-[A-Za-z0-9_-]{8,}|gh[pousr]_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{20,}|Bearer\s+\S{8,})")


def instructions(text):
    """(line number, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, buf, start = [], "", None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if start is None:
            start = no
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf, start = "", None
    if buf:
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
    return out


def exec_form(args):
    try:
        value = json.loads(args)
    except ValueError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def strip_flags(args):
    """`--from=x --chmod=y a b` -> ([flags], `a b`)."""
    flags = []
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        flags.append(flag)
        args = args.strip()
    return flags, args


def check(dockerfile_text, dockerignore_text=None):
    problems = []
    ins = instructions(dockerfile_text)
    froms = [(no, args) for no, word, args in ins if word == "FROM"]
    stage_names = set()
    if len(froms) < 2:
        problems.append("not multi-stage: a build stage and a final stage are expected")
    for no, args in froms:
        _, args = strip_flags(args)
        parts = args.split()
        image = parts[0] if parts else ""
        if len(parts) >= 3 and parts[1].upper() == "AS":
            stage_names.add(parts[2].lower())
        if image == "scratch" or image.lower() in stage_names:
            continue
        if "@sha256:" in image:
            continue
        name_tag = image.rsplit("/", 1)[-1]
        if ":" not in name_tag:
            problems.append(f"line {no}: base image `{image}` has no tag (pin one)")
        elif name_tag.rsplit(":", 1)[1] == "latest":
            problems.append(f"line {no}: base image `{image}` uses `latest` (pin a version)")

    last_from = max((i for i, (_, w, _) in enumerate(ins) if w == "FROM"), default=0)
    final = ins[last_from:]
    if froms:
        _, final_args = strip_flags(froms[-1][1])
        final_image = final_args.split()[0] if final_args.split() else ""
        if final_image != "scratch" and not final_image.startswith("gcr.io/distroless/"):
            problems.append(f"final stage `{final_image}`: expected scratch or a distroless image")

    users = [(no, args) for no, word, args in final if word == "USER"]
    if not users:
        problems.append("final stage sets no USER (it would run as root)")
    else:
        no, user = users[-1]
        uid = user.split(":")[0]
        if not uid.isdigit():
            problems.append(f"line {no}: USER `{user}`: use a number (scratch has no /etc/passwd)")
        elif int(uid) == 0 or (":" in user and user.split(":")[1] == "0"):
            problems.append(f"line {no}: USER `{user}` is root")

    for no, word, args in ins:
        if word in ("ENTRYPOINT", "CMD") and exec_form(args) is None:
            problems.append(f"line {no}: {word} is not in exec form (a JSON array)")
        if word == "HEALTHCHECK":
            _, rest = strip_flags(args)
            kind, _, cmd = rest.partition(" ")
            if kind.upper() == "NONE":
                problems.append(f"line {no}: HEALTHCHECK NONE")
                continue
            argv = exec_form(cmd.strip())
            if kind.upper() != "CMD" or argv is None:
                problems.append(f"line {no}: HEALTHCHECK CMD is not in exec form")
            elif argv[:2] != ["/llm-keyproxy", "health"]:
                problems.append(f"line {no}: HEALTHCHECK should run /llm-keyproxy health, not {argv}")
        if re.search(r"\b(curl|wget)\b", args) and word != "LABEL":
            problems.append(f"line {no}: {word} uses curl or wget; the image has neither")
        if word in ("ENV", "ARG"):
            for pair in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:=(\"[^\"]*\"|\S*))?", args):
                name, value = pair
                if SECRET_NAME.search(name):
                    problems.append(f"line {no}: {word} {name}: secrets never go in an image")
                if value and SECRET_VALUE.search(value):
                    problems.append(f"line {no}: {word} {name} holds a key-shaped value")
        if SECRET_VALUE.search(args):
            problems.append(f"line {no}: {word} holds a key-shaped value")

    if not any(w == "HEALTHCHECK" for _, w, _ in final):
        problems.append("final stage has no HEALTHCHECK")
    entry = [exec_form(a) for _, w, a in final if w == "ENTRYPOINT"]
    if not entry or not entry[-1] or entry[-1][0] != "/llm-keyproxy":
        problems.append("final stage ENTRYPOINT should start with /llm-keyproxy")
    copied = [a for _, w, a in final if w == "COPY"]
    if not any(strip_flags(a)[1].split()[-1:] == ["/llm-keyproxy"] for a in copied):
        problems.append("final stage does not COPY the binary to /llm-keyproxy")

    exposed = set()
    for no, word, args in final:
        if word != "EXPOSE":
            continue
        for item in args.split():
            port = item.split("/")[0]
            lo, _, hi = port.partition("-")
            try:
                exposed.update(range(int(lo), int(hi or lo) + 1))
            except ValueError:
                problems.append(f"line {no}: EXPOSE `{item}` is not a port or range")
    missing = sorted(PORTS - exposed)
    if missing:
        problems.append(f"EXPOSE lacks {missing} (10000-10004 and 9901 expected)")

    try:
        build_command(dockerfile_text)
    except ValueError as e:
        problems.append(str(e))

    if dockerignore_text is not None:
        lines = [l.strip() for l in dockerignore_text.splitlines() if l.strip() and not l.startswith("#")]
        allow_list = "*" in lines
        for needed in ("target", ".git", ".venv"):
            if any(l.lstrip("!").strip("/").lstrip("*/") == needed for l in lines if l.startswith("!")):
                problems.append(f".dockerignore lets {needed}/ back in")
            elif not allow_list and not any(l.strip("/").lstrip("*/") == needed for l in lines):
                problems.append(f".dockerignore does not exclude {needed}/")
    return problems


def build_command(dockerfile_text):
    """The `cargo build ...` arguments of the build stage (continuations joined)."""
    for _, word, args in instructions(dockerfile_text):
        if word != "RUN":
            continue
        m = re.search(r"cargo build ([^&;|]*)", args)
        if m:
            argv = m.group(1).split()
            for needed in ("--release", "x86_64-unknown-linux-musl", "llm-keyproxy"):
                if needed not in argv:
                    raise ValueError(f"the cargo build lacks {needed}: {' '.join(argv)}")
            return argv
    raise ValueError("no RUN cargo build in the Dockerfile")


GOOD = """FROM rust:1.95-bookworm AS build
RUN cargo build --release --target x86_64-unknown-linux-musl -p llm-keyproxy
FROM scratch
COPY --from=build /x /llm-keyproxy
USER 65532:65532
EXPOSE 10000-10004 9901
HEALTHCHECK CMD ["/llm-keyproxy", "health"]
ENTRYPOINT ["/llm-keyproxy"]
CMD ["awf"]
"""

# Each broken variant of GOOD and a word of the problem it must raise.
BAD = [
    (GOOD.replace("rust:1.95-bookworm", "rust:latest"), "latest"),
    (GOOD.replace("rust:1.95-bookworm", "rust"), "no tag"),
    (GOOD.replace("USER 65532:65532\n", ""), "no USER"),
    (GOOD.replace("USER 65532:65532", "USER 0"), "root"),
    (GOOD.replace("USER 65532:65532", "USER nonroot"), "number"),
    (GOOD.replace('ENTRYPOINT ["/llm-keyproxy"]', "ENTRYPOINT /llm-keyproxy"), "exec form"),
    (GOOD.replace('CMD ["awf"]', "CMD awf"), "exec form"),
    (GOOD.replace('HEALTHCHECK CMD ["/llm-keyproxy", "health"]',
                  "HEALTHCHECK CMD curl -f http://localhost:10000/health"), "curl"),
    (GOOD.replace("10000-10004 9901", "10000"), "EXPOSE lacks"),
    (GOOD.replace("FROM scratch", "FROM debian:bookworm-slim"), "final stage"),
    (GOOD.replace("CMD [\"awf\"]", "CMD [\"awf\"]\nENV OPENAI_API_KEY=x"), "secrets"),
    (GOOD.replace("CMD [\"awf\"]", "CMD [\"awf\"]\nLABEL x=sk-abcdefghijkl"), "key-shaped"),
    (GOOD.replace(" --target x86_64-unknown-linux-musl", ""), "lacks"),
    ("\n".join(GOOD.splitlines()[2:]), "multi-stage"),
]


def self_test():
    """The rules fire: GOOD passes, each BAD variant fails with its problem named."""
    assert check(GOOD, "*\n!src/\n") == [], check(GOOD, "*\n!src/\n")
    for text, word in BAD:
        problems = check(text)
        assert any(word in p for p in problems), f"expected `{word}` in {problems} for:\n{text}"
    assert any(".git" in p for p in check(GOOD, "target/\n"))
    assert any("back in" in p for p in check(GOOD, "*\n!target/\n"))
    print(f"dockerfile_policy self-test: {len(BAD) + 3} broken Dockerfiles caught")


def main(argv):
    if argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if len(argv) == 3 and argv[1] == "--build-command":
        with open(argv[2], encoding="utf-8") as f:
            print(" ".join(build_command(f.read())))
        return 0
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    ignore = None
    if len(argv) == 3:
        with open(argv[2], encoding="utf-8") as f:
            ignore = f.read()
    problems = check(text, ignore)
    for p in problems:
        print(f"{argv[1]}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{argv[1]}: policy OK (multi-stage, pinned bases, exec form, non-root, ports, no curl, no secrets)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
