//! `lighthouse`: runs a seed node until SIGTERM/Ctrl-C (graceful leave) or until the
//! node is downed or removed. Exit code 0 after a normal shutdown, 1 when it could not
//! join its seeds in time, 2 for a configuration error.

use clap::Parser;

#[tokio::main]
async fn main() {
    runtime::node::init_tracing();
    let cli = lighthouse::Cli::parse();
    let cfg = match lighthouse::config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime::node::run(cfg).await;
    std::process::exit(code);
}
