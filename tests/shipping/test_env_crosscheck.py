"""Every environment variable the manifests set is one a binary reads (issue 7).

The first tests check the Rust-source scanner on small examples (they run in the default check);
the cross-check itself reads the real crates/ and is marked `crates`: it runs with
`scripts/check-shipping.sh --with-crates` and cannot pass before the services exist.
"""

from __future__ import annotations

import re
import textwrap

import pytest

from envscan import binary_reads, dockerfile_settings, manifest_settings, names_read, rust_sources, strip_comments
from shipping import DOCKERFILE, PACKAGES, REPO

CRATES = REPO / "crates"


def scan(code: str) -> set[str]:
    return names_read(textwrap.dedent(code))


def test_scanner_finds_direct_reads():
    assert scan('let p = std::env::var("CLUSTER_PORT")?; let s = env::var_os( "CLUSTER_SEEDS" );') == {
        "CLUSTER_PORT",
        "CLUSTER_SEEDS",
    }


def test_scanner_finds_clap_env():
    code = """
        #[derive(Parser)]
        struct Args {
            #[arg(long, env = "CLUSTER_IP", default_value = "127.0.0.1")]
            host: String,
        }
        fn cmd() -> Command { Command::new("x").arg(Arg::new("port").env("HTTP_PORT")) }
    """
    assert scan(code) == {"CLUSTER_IP", "HTTP_PORT"}


def test_scanner_follows_consts_and_helpers():
    code = """
        pub const ENV_SEEDS: &str = "CLUSTER_SEEDS";
        const ENV_ROLES: &'static str = "CLUSTER_ROLES";
        fn env_or(name: &str, default: &str) -> String {
            std::env::var(name).unwrap_or_else(|_| default.to_string())
        }
        fn parse_env<T: FromStr>(key: &'static str) -> Option<T> { env::var(key).ok()?.parse().ok() }
        fn load() {
            let a = env_or("ACTORSYSTEM", "AkkaTrader");
            let b: Option<u16> = parse_env("MANAGEMENT_PORT");
            let c = env::var(ENV_SEEDS);
            let d = env_or(self::ENV_ROLES, "");
            let e = not_a_reader("POD_NAME");
        }
        fn not_a_reader(x: &str) -> &str { x }
    """
    assert scan(code) == {"ACTORSYSTEM", "MANAGEMENT_PORT", "CLUSTER_SEEDS", "CLUSTER_ROLES"}


def test_scanner_follows_lookup_functions_used_with_the_environment():
    code = """
        pub fn from_env(name: &str) -> Result<Self, E> {
            Self::from_lookup(name, |k| std::env::var(k).ok())
        }
        pub fn from_lookup(default: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, E> {
            let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
            let a = get("LOG_FORMAT");
            let b = lookup("OTEL_SERVICE_NAME");
            Ok(x)
        }
        fn other(lookup: impl Fn(&str) -> Option<String>) { let c = lookup("NEVER_FROM_ENV"); }
    """
    assert scan(code) == {"LOG_FORMAT", "OTEL_SERVICE_NAME"}


def test_scanner_ignores_comments_tests_writes_and_messages():
    code = """
        // let x = std::env::var("IN_A_COMMENT");
        /* env::var("IN_A_BLOCK_COMMENT") */
        fn f() {
            std::env::set_var("SET_NOT_READ", "1");
            Command::new("child").env("PASSED_TO_CHILD", "1");
            let url = "mongodb://mongodb:27017/x"; // a string with // inside is not a comment
            let p = env::var("REALLY_READ");
            bail!("CLUSTER_PORT must be a number");
        }
        #[cfg(test)]
        mod tests {
            fn g() { let _ = std::env::var("ONLY_IN_TESTS"); }
        }
    """
    assert scan(code) == {"REALLY_READ"}


def test_scanner_counts_rust_log_with_envfilter():
    assert scan("let f = EnvFilter::try_from_default_env().unwrap_or_default();") == {"RUST_LOG"}
    assert scan("let f = EnvFilter::new(\"info\");") == set()


def test_strip_comments_keeps_lines_and_strings():
    src = 'let a = "x // y"; // gone\nlet b = r#"/* kept */"#; /* gone\n */ let c = \'"\';\n'
    out = strip_comments(src)
    assert out.count("\n") == src.count("\n")
    assert '"x // y"' in out and 'r#"/* kept */"#' in out and "gone" not in out and "'\"'" in out


def test_manifest_side_is_collected():
    settings = manifest_settings()
    names = {s.name for s in settings}
    # Spot checks that each source is read: k8s, compose (and its test override) and the Dockerfile.
    assert any(s.where.startswith("k8s/services/lighthouse.yaml") and s.name == "CLUSTER_SEEDS" for s in settings)
    assert any(s.where.startswith("docker/docker-compose.yaml pricing-web") and s.name == "HTTP_PORT" for s in settings)
    assert any(s.where == "docker/docker-compose.test.yaml traders" and s.name == "BLOTTER_DIR" for s in settings)
    assert {s.name for s in dockerfile_settings(DOCKERFILE)} >= {"LOG_FORMAT", "CLUSTER_PORT", "HTTP_PORT"}
    # Third-party containers (MongoDB, Jaeger) are not our binaries.
    assert "COLLECTOR_OTLP_ENABLED" not in names


@pytest.mark.crates
def test_crates_have_rust_sources():
    assert rust_sources(CRATES), "no Rust sources under crates/ yet"


@pytest.mark.crates
def test_every_variable_the_manifests_set_is_read_by_a_binary():
    reads = binary_reads(CRATES)
    unread: dict[str, list[str]] = {}
    for s in manifest_settings():
        if s.name not in reads:
            unread.setdefault(s.name, []).append(s.where)
    assert not unread, "set in the manifests but read by no binary under crates/:\n" + "\n".join(
        f"  {name}: {', '.join(sorted(set(where))[:4])}" for name, where in sorted(unread.items())
    )


def documented_variables() -> set[str]:
    """The first column of every configuration table of docs/architecture.md (the tables after a
    `<!-- config-table: ... -->` marker)."""
    names: set[str] = set()
    in_table = False
    for line in (REPO / "docs" / "architecture.md").read_text().splitlines():
        if line.startswith("<!-- config-table:"):
            in_table = True
        elif in_table and line.startswith("|"):
            m = re.match(r"\|\s*`([A-Z][A-Z0-9_]*)`", line)
            if m:
                names.add(m.group(1))
        elif in_table and line.strip():
            in_table = False
    return names


@pytest.mark.crates
def test_every_variable_a_binary_reads_is_documented():
    """docs/architecture.md's configuration tables list every variable a binary reads; each
    binary's Rust tests check the other direction and the defaults."""
    undocumented = sorted(set(binary_reads(CRATES)) - documented_variables())
    assert not undocumented, f"read by a binary but not in docs/architecture.md: {undocumented}"


@pytest.mark.crates
def test_dockerfile_packages_exist_with_their_binaries():
    import tomllib

    found: dict[str, set[str]] = {}
    for manifest in CRATES.glob("*/Cargo.toml"):
        data = tomllib.loads(manifest.read_text())
        pkg = data.get("package", {}).get("name")
        if pkg:
            bins = {b["name"] for b in data.get("bin", [])}
            if not bins and (manifest.parent / "src" / "main.rs").exists():
                bins = {pkg}
            found[pkg] = bins
    for pkg, binary in PACKAGES.items():
        assert pkg in found, f"docker/build.Dockerfile builds package {pkg}, which crates/ does not have"
        assert binary in found[pkg], f"package {pkg} must build the binary {binary} (has {sorted(found[pkg])})"


@pytest.mark.crates
def test_tradectl_supports_the_prestop_hook():
    """The preStop hook runs `tradectl --addr 127.0.0.1:8558 cluster leave` with the pod's
    MANAGEMENT_TOKEN in its environment (exec hooks get no $(VAR) expansion), so tradectl must
    have the --addr flag and the leave command, and read MANAGEMENT_TOKEN (itself or through the
    runtime it uses)."""
    import re

    from envscan import strip_comments

    ctl = [p for p in rust_sources(CRATES) if p.relative_to(CRATES).parts[0] == "ctl"]
    assert ctl, "no tradectl sources (crates/ctl)"
    src = "\n".join(strip_comments(p.read_text()) for p in ctl)
    assert re.search(r"\baddr\b", src), "tradectl has no --addr option"
    assert re.search(r"\bLeave\b|\"leave\"", src), "tradectl has no `cluster leave` command"
    readers = {
        p.relative_to(CRATES).parts[0]
        for p in rust_sources(CRATES)
        if "MANAGEMENT_TOKEN" in names_read(p.read_text(errors="replace"))
    }
    assert readers & {"ctl", "runtime"}, f"MANAGEMENT_TOKEN is read only by {sorted(readers)}, not by tradectl"
