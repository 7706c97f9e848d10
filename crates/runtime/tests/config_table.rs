//! The node settings table of docs/architecture.md against the code: every flag and variable
//! of [`NodeArgs`] is documented, and every default the table writes as a literal is the
//! default `resolve` applies (setting the variable to it changes nothing).

use clap::{CommandFactory, Parser};
use lesson_check::config_table::{architecture_doc, check_command, rows_for};
use runtime::{NodeArgs, ServiceDefaults};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

fn resolved(args: &[&str]) -> String {
    let cli = Cli::try_parse_from(std::iter::once("node").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    // A node that seeds itself, as the lighthouse does, so that no flag is required.
    let defaults = ServiceDefaults {
        self_seed: true,
        ..ServiceDefaults::default()
    };
    let config = cli
        .node
        .resolve(&defaults)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    format!("{config:?}")
}

#[test]
fn every_node_flag_and_variable_is_documented() {
    let problems = check_command(&architecture_doc(), "runtime", &Cli::command());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_documented_defaults_are_the_defaults() {
    let base = resolved(&[]);
    // The comparison sees a change: a value other than the default makes another config.
    assert_ne!(resolved(&["--sbr-stable-after", "21s"]), base);
    let rows = rows_for(&architecture_doc(), "runtime");
    let literal: Vec<_> = rows.iter().filter(|r| r.default.is_some()).collect();
    assert!(
        literal.len() >= 15,
        "only {} literal defaults",
        literal.len()
    );
    for row in literal {
        let flag = row.flag.as_deref().expect("every node setting has a flag");
        let value = row.default.as_deref().expect("filtered");
        assert_eq!(
            resolved(&[flag, value]),
            base,
            "{flag} {value}: docs/architecture.md says it is the default, but it changes the configuration"
        );
    }
}
