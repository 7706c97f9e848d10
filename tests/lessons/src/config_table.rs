//! The configuration tables of `docs/architecture.md`, checked against the code: each binary's
//! unit test hands its clap command to [`check_command`], which compares every flag, its
//! environment variable and its clap default with the rows of the tables marked for that binary
//! (`<!-- config-table: lighthouse pricing-web -->` before the table).

use std::path::Path;

/// The architecture document, which holds the tables.
pub fn architecture_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/architecture.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One documented setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `None` when the setting has no environment variable (`—` in the table).
    pub variable: Option<String>,
    /// `None` when the setting has no flag (`—` in the table).
    pub flag: Option<String>,
    /// The default cell: `Some(value)` when it is a literal in backticks, else `None` (a
    /// description such as "per service").
    pub default: Option<String>,
    /// The whole default cell as written.
    pub default_text: String,
}

/// Every environment variable of every configuration table: what the project's binaries read.
pub fn all_variables(doc: &str) -> std::collections::BTreeSet<String> {
    let binaries: std::collections::BTreeSet<&str> = doc
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<!-- config-table:"))
        .flat_map(|m| m.trim_end_matches("-->").split_whitespace())
        .collect();
    binaries
        .into_iter()
        .flat_map(|b| rows_for(doc, b))
        .filter_map(|r| r.variable)
        .collect()
}

/// The rows of every table marked for `binary`.
pub fn rows_for(doc: &str, binary: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut lines = doc.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(marker) = line.trim().strip_prefix("<!-- config-table:") else {
            continue;
        };
        let binaries = marker.trim_end_matches("-->");
        if !binaries.split_whitespace().any(|b| b == binary) {
            continue;
        }
        // Skip blank lines, the header and the separator.
        while lines
            .peek()
            .is_some_and(|l| !l.trim_start().starts_with('|'))
        {
            lines.next();
        }
        lines.next();
        lines.next();
        while let Some(row) = lines.next_if(|l| l.trim_start().starts_with('|')) {
            let cells: Vec<&str> = row
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let code = |cell: &str| {
                let inner = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`'));
                inner.filter(|i| !i.contains('`')).map(str::to_string)
            };
            rows.push(Row {
                variable: cells.first().and_then(|c| code(c)),
                flag: cells.get(1).and_then(|c| code(c)),
                default: cells.get(2).and_then(|c| code(c)),
                default_text: cells.get(2).unwrap_or(&"").to_string(),
            });
        }
    }
    rows
}

/// Compares `command`'s flags with the rows documented for `binary`; the problems found.
pub fn check_command(doc: &str, binary: &str, command: &clap::Command) -> Vec<String> {
    let rows = rows_for(doc, binary);
    let mut problems = Vec::new();
    if rows.is_empty() {
        problems.push(format!(
            "docs/architecture.md has no configuration table for `{binary}`"
        ));
    }
    let mut seen = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let flag = format!("--{long}");
        let variable = arg.get_env().map(|v| v.to_string_lossy().into_owned());
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        seen.push(flag.clone());
        let Some(row) = rows
            .iter()
            .find(|r| r.flag.as_deref() == Some(flag.as_str()))
        else {
            problems.push(format!(
                "`{binary} {flag}` ({variable:?}) is not documented"
            ));
            continue;
        };
        if row.variable != variable {
            problems.push(format!(
                "`{binary} {flag}` reads {variable:?}, the table says {:?}",
                row.variable
            ));
        }
        if !default.is_empty() && row.default.as_deref() != Some(default.join(",").as_str()) {
            problems.push(format!(
                "`{binary} {flag}` defaults to `{}`, the table says {}",
                default.join(","),
                row.default_text
            ));
        }
    }
    for row in &rows {
        if let Some(flag) = &row.flag
            && !seen.contains(flag)
        {
            problems.push(format!(
                "the table documents `{flag}` for `{binary}`, which has no such flag"
            ));
        }
    }
    problems
}

/// Panics with every problem [`check_command`] finds.
pub fn assert_documented(binary: &str, command: &clap::Command) {
    let problems = check_command(&architecture_doc(), binary, command);
    assert!(
        problems.is_empty(),
        "configuration table (docs/architecture.md):\n{}",
        problems.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    const DOC: &str = "text\n\n<!-- config-table: demo other -->\n\
        | variable | flag | default | meaning |\n|---|---|---|---|\n\
        | `PORT` | `--port` | `8080` | the port |\n\
        | `SEEDS` | `--seeds` | per service | seeds |\n\
        | — | `--history` | `300` | points |\n\nafter\n";

    fn demo(port_default: &'static str) -> Command {
        Command::new("demo")
            .arg(
                Arg::new("port")
                    .long("port")
                    .env("PORT")
                    .default_value(port_default),
            )
            .arg(Arg::new("seeds").long("seeds").env("SEEDS"))
            .arg(Arg::new("history").long("history").default_value("300"))
    }

    #[test]
    fn every_table_s_variables_are_the_project_s_own() {
        assert_eq!(
            all_variables(DOC).into_iter().collect::<Vec<_>>(),
            ["PORT", "SEEDS"]
        );
        // What the lessons' shells must not inherit from a test run (scripts/test.sh exports
        // its MongoDB test server's address).
        let own = all_variables(&architecture_doc());
        for v in [
            "MONGO_CONNECTION_STR",
            "CLUSTER_SEEDS",
            "RUST_LOG",
            "LOG_FORMAT",
        ] {
            assert!(own.contains(v), "{v} missing from {own:?}");
        }
    }

    #[test]
    fn rows_are_read_from_marked_tables() {
        let rows = rows_for(DOC, "other");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].variable.as_deref(), Some("SEEDS"));
        assert_eq!(rows[1].default, None);
        assert_eq!(rows[2].variable, None);
        assert!(rows_for(DOC, "nobody").is_empty());
    }

    #[test]
    fn a_matching_command_passes_and_each_difference_is_told() {
        assert_eq!(
            check_command(DOC, "demo", &demo("8080")),
            Vec::<String>::new()
        );
        let problems = check_command(DOC, "demo", &demo("9090"));
        assert!(problems[0].contains("defaults to `9090`"), "{problems:?}");
        let extra = demo("8080").arg(Arg::new("x").long("extra").env("EXTRA"));
        assert!(check_command(DOC, "demo", &extra)[0].contains("`demo --extra`"));
        let renamed = Command::new("demo")
            .arg(
                Arg::new("port")
                    .long("port")
                    .env("HTTP_PORT")
                    .default_value("8080"),
            )
            .arg(Arg::new("history").long("history").default_value("300"));
        let problems = check_command(DOC, "demo", &renamed);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("reads Some(\"HTTP_PORT\")")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("`--seeds`")),
            "{problems:?}"
        );
    }
}
