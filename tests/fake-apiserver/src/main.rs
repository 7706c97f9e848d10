//! `fake-apiserver`: the fake Kubernetes API server as a process, for the Kubernetes harness
//! (`tests/k8s-harness`), which runs the manifests as containers and writes the pods it runs to
//! a file in the API's shape. Pods reach this server like an API server: it writes the service
//! account folder they mount (`ca.crt` of its own CA, `token`, `namespace`) and prints the
//! address to put in `KUBERNETES_SERVICE_HOST`/`_PORT`.
//!
//! ```text
//! fake-apiserver --bind 172.18.0.1:0 --name 172.18.0.1 --namespace akka-cqrs \
//!     --service-account-dir /tmp/sa --pods-file /tmp/state/pods.json
//! ```
//!
//! It prints `listening on https://ADDR` once ready and serves until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use fake_apiserver::{FakeApiServer, Options};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "fake-apiserver",
    about = "An HTTPS stand-in for the Kubernetes pods API"
)]
struct Cli {
    /// Address to listen on (port 0: any free port).
    #[arg(long)]
    bind: SocketAddr,
    /// A name or IP the certificate is for (repeat for more).
    #[arg(long = "name", required = true)]
    names: Vec<String>,
    /// The namespace whose pods are served.
    #[arg(long)]
    namespace: String,
    /// Where to write `ca.crt`, `token` and `namespace`, as Kubernetes mounts them.
    #[arg(long)]
    service_account_dir: PathBuf,
    /// JSON array of pods in the API's shape, read on every request.
    #[arg(long)]
    pods_file: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let token = format!("harness-{:016x}", rand_token());
    let options = Options {
        bind: cli.bind,
        names: cli.names,
        pods_file: Some(cli.pods_file),
    };
    let server = match FakeApiServer::start_with(&cli.namespace, &token, options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", cli.bind);
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.write_service_account(&cli.service_account_dir) {
        eprintln!("error: {}: {e}", cli.service_account_dir.display());
        return std::process::ExitCode::FAILURE;
    }
    println!("listening on {}", server.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "fake-apiserver: served {} pod lists, refused {}",
        server.served(),
        server.rejected()
    );
    std::process::ExitCode::SUCCESS
}

/// A token that differs per run (the pods read it from the file, nobody types it).
fn rand_token() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}
