//! The lighthouse's flags against the configuration table of docs/architecture.md.

use clap::CommandFactory;

#[test]
fn every_flag_is_documented() {
    lesson_check::config_table::assert_documented("lighthouse", &lighthouse::Cli::command());
}
