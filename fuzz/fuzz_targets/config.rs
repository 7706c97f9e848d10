//! The configuration parser every service runs at start: command-line flags (each also an
//! environment variable) through clap and `NodeArgs::resolve`, which checks every value and
//! builds the node's configuration. The input is the argument list, split at NUL bytes. Any
//! list must give a configuration or a clear error, never a panic; so must the duration
//! parser the flags share, on each argument alone.
#![no_main]

use clap::Parser;
use libfuzzer_sys::fuzz_target;
use runtime::config::parse_duration;
use runtime::{NodeArgs, ServiceDefaults};

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args: Vec<&str> = text.split('\0').collect();
    for a in &args {
        let _ = parse_duration(a);
    }
    let Ok(cli) = Cli::try_parse_from(std::iter::once("node").chain(args)) else {
        return;
    };
    let defaults = ServiceDefaults {
        port: 5055,
        roles: vec!["trade-processor".into()],
        self_seed: false,
    };
    let _ = cli.node.resolve(&defaults);
});
