"""Both sides of the environment-variable cross-check.

Manifest side: every variable that k8s/ (our containers), docker/docker-compose.yaml and the
container tests' docker/docker-compose.test.yaml (our services) and docker/Dockerfile (ENV of the
runtime and service stages) set for our binaries.

Binary side: every variable name the Rust sources under crates/ read at run time, found in the
code itself:
  - `env::var("X")` / `env::var_os("X")` (with or without the `std::` path);
  - clap: `#[arg(env = "X")]` and `Arg::new(..).env("X")`;
  - either of the above through a `const NAME: &str = "X";`;
  - helper functions whose body passes their first parameter to `env::var`/`var_os`, called
    with a literal or such a const: `fn env_or(name: &str, ..) { std::env::var(name) .. }`;
  - lookup functions, the testable form crates/telemetry uses: a function with a parameter
    `lookup: impl Fn(&str) -> Option<String>` reads the literal (or const) names it passes to
    `lookup`, directly or through a closure over it (`let get = |k: &str| lookup(k)..;
    get("LOG_FORMAT")`), provided the same source calls that function with `env::var`
    (`from_lookup(name, |k| std::env::var(k).ok())`);
  - library reads, counted only with evidence in our code: `RUST_LOG` when tracing-subscriber's
    `EnvFilter::from_default_env` / `try_from_default_env` is called (its default variable), and
    the standard OTEL_* variables that the opentelemetry SDK / OTLP exporter read themselves, when
    a crate depends on `opentelemetry_sdk` / `opentelemetry-otlp` (see LIBRARY_VARS).
Comments, `#[cfg(test)]` items and the tests/, benches/ and examples/ folders do not count: a
variable only a test reads is not one a binary reads.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from shipping import COMPOSE, COMPOSE_TEST, DOCKERFILE, IMAGE_PREFIX, K8S, REPO, containers, docs_in, is_own_image

NAME = r"[A-Z][A-Z0-9_]*"

# Variables read by libraries rather than by our code, keyed by the Cargo dependency that reads
# them. Documented behaviour of those crates: the SDK's resource detector reads OTEL_SERVICE_NAME
# and OTEL_RESOURCE_ATTRIBUTES, its sampler OTEL_TRACES_SAMPLER(_ARG); the OTLP exporter reads the
# OTEL_EXPORTER_OTLP_* endpoint, protocol, headers and timeout variables.
LIBRARY_VARS = {
    "opentelemetry_sdk": ["OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"],
    "opentelemetry-otlp": [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ],
}


# ------------------------------------------------------------------------------------------------
# Manifest side


@dataclass(frozen=True)
class Setting:
    name: str
    where: str


def manifest_settings() -> list[Setting]:
    out: list[Setting] = []
    for doc in docs_in(K8S):
        if doc.kind not in ("Deployment", "StatefulSet"):
            continue
        for c in containers(doc):
            if is_own_image(c["image"]):
                out += [Setting(e["name"], f"{doc.path.relative_to(REPO)} {doc.name}") for e in c.get("env", [])]
    with open(COMPOSE) as f:
        compose = yaml.safe_load(f)
    with open(COMPOSE_TEST) as f:
        override = yaml.safe_load(f)
    for path, doc in ((COMPOSE, compose), (COMPOSE_TEST, override)):
        for name, svc in doc["services"].items():
            # The override names no image for our services: they keep the users' file's.
            image = svc.get("image") or compose["services"].get(name, {}).get("image", "")
            if is_own_image(image) and not image.startswith(f"{IMAGE_PREFIX}/secantusdb:"):
                env = svc.get("environment") or {}
                keys = env.keys() if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
                out += [Setting(k, f"docker/{path.name} {name}") for k in keys]
    out += dockerfile_settings(DOCKERFILE)
    return out


def dockerfile_settings(path: Path) -> list[Setting]:
    from dockerfile_parse import DockerfileParser

    out, stage = [], None
    for instr in DockerfileParser(path=str(path)).structure:
        if instr["instruction"] == "FROM":
            parts = instr["value"].split()
            stage = parts[2] if len(parts) == 3 else parts[0]
        elif instr["instruction"] == "ENV" and stage not in ("chef", "planner", "builder"):
            for token in shlex.split(instr["value"]):
                out.append(Setting(token.split("=", 1)[0], f"docker/Dockerfile stage {stage}"))
    return out


# ------------------------------------------------------------------------------------------------
# Binary side


def strip_comments(src: str) -> str:
    """Blanks out // and /* */ comments, keeping strings (and line numbers) intact."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r(#*)"', src[i:]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', src[i:]).group(1)
            end = src.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(src[i:end])
            i = end
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(src[i : j + 1])
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", src[i:]):
            m = re.match(r"'(\\.|[^\\'])'", src[i:])
            out.append(m.group(0))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _matching_brace(src: str, open_at: int) -> int:
    depth, i = 0, open_at
    while i < len(src):
        c = src[i]
        if c == '"':
            i += 1
            while i < len(src) and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return len(src) - 1


def strip_cfg_test(src: str) -> str:
    """Removes items under #[cfg(test)] (a test module or function)."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]", src)
        if not m:
            return src
        brace = src.find("{", m.end())
        semi = src.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):  # `#[cfg(test)] mod tests;` or `use ...;`
            end = semi if semi >= 0 else m.end()
        else:
            end = _matching_brace(src, brace)
        src = src[: m.start()] + src[end + 1 :]


ENV_CALL = r"(?:std\s*::\s*)?env\s*::\s*var(?:_os)?\s*\(\s*"


def names_read(src: str) -> set[str]:
    """Variable names one (comment- and test-stripped) Rust source reads."""
    src = strip_cfg_test(strip_comments(src))
    found: set[str] = set()
    consts = dict(re.findall(rf"\bconst\s+(\w+)\s*:\s*&(?:'static\s+)?str\s*=\s*\"({NAME})\"\s*;", src))

    def arg_names(prefix: str, text: str | None = None) -> set[str]:
        """Literal or const arguments following the regex `prefix` (in `text`, default all)."""
        text = src if text is None else text
        names = set(re.findall(prefix + rf"\"({NAME})\"", text))
        for ident in re.findall(prefix + r"(?:[\w:]+::)?(\w+)\b", text):
            if ident in consts:
                names.add(consts[ident])
        return names

    found |= arg_names(ENV_CALL)
    found |= arg_names(r"\benv\s*=\s*")  # clap derive: #[arg(long, env = "X")]
    found |= {n for n in arg_names(r"\.env\(\s*") if re.search(rf"\.env\(\s*(?:\"{n}\"|\w+)\s*\)", src)}
    # Helper functions that read the variable named by their first parameter.
    for fn_name, param, body_start in [
        (m.group(1), m.group(2), m.end()) for m in re.finditer(r"\bfn\s+(\w+)\s*(?:<[^>]*>)?\(\s*(\w+)\s*:", src)
    ]:
        brace = src.find("{", body_start)
        if brace < 0:
            continue
        body = src[brace : _matching_brace(src, brace) + 1]
        if re.search(ENV_CALL + rf"&?{param}\b", body) or re.search(rf"\.env\(\s*{param}\s*\)", body):
            found |= arg_names(rf"(?<![\w:]){fn_name}\s*\(\s*")
    # Lookup functions (see the module documentation).
    for m in re.finditer(
        r"\bfn\s+(\w+)\s*(?:<[^>]*>)?\(([^)]*?)\b(\w+)\s*:\s*impl\s+Fn\(\s*&str\s*\)\s*->\s*Option<String>",
        src,
    ):
        fn_name, lookup = m.group(1), m.group(3)
        if not re.search(rf"\b{fn_name}\s*\([^;]*?{ENV_CALL}", src):
            continue
        brace = src.find("{", m.end())
        if brace < 0:
            continue
        body = src[brace : _matching_brace(src, brace) + 1]
        callers = {lookup} | set(re.findall(rf"\blet\s+(\w+)\s*=\s*\|[^|]*\|\s*{lookup}\s*\(", body))
        for c in callers:
            found |= arg_names(rf"(?<![\w:]){c}\s*\(\s*", body)
    if re.search(r"\b(?:try_)?from_default_env\s*\(", src):
        found.add("RUST_LOG")
    return found


def rust_sources(crates: Path) -> list[Path]:
    skip = {"tests", "benches", "examples", "target"}
    return sorted(p for p in crates.rglob("*.rs") if not skip & set(p.relative_to(crates).parts[:-1]))


def crate_dependencies(crates: Path) -> set[str]:
    deps: set[str] = set()
    for manifest in crates.glob("*/Cargo.toml"):
        data = tomllib.loads(manifest.read_text())
        for table in ("dependencies", "build-dependencies"):
            deps |= set(data.get(table, {}))
        for target in data.get("target", {}).values():
            deps |= set(target.get("dependencies", {}))
    return deps


def binary_reads(crates: Path) -> dict[str, str]:
    """Variable name -> where it is read (first source file or library)."""
    out: dict[str, str] = {}
    for path in rust_sources(crates):
        for name in names_read(path.read_text(errors="replace")):
            out.setdefault(name, str(path.relative_to(crates.parent)))
    deps = crate_dependencies(crates)
    for dep, names in LIBRARY_VARS.items():
        if dep in deps or dep.replace("-", "_") in deps or dep.replace("_", "-") in deps:
            for name in names:
                out.setdefault(name, f"the {dep} crate (a dependency)")
    return out
