//! `tradectl`: see the crate docs of `ctl` for the commands.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = ctl::Cli::parse();
    let mut out = std::io::stdout();
    if let Err(e) = ctl::run(&cli, &mut out).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
